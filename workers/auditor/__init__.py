"""The auditor: finds boxes the planner missed and boxes whose order never came."""
