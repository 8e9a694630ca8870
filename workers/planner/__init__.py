"""The planner: joins orders with box-closed events into parcel plans and label jobs."""
