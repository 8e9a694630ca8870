"""parcelflow's print agent for one packing station (``parcelflow station``)."""
