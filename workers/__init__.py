"""parcelflow's processes: receiver, enricher, planner, labeler, and the devstack."""
