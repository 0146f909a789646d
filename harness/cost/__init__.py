"""What time costs: the audit of each knob on this machine and the cost model fitted to it."""
