"""The claims lab: published claims about norms (speed, memory, training dynamics) re-measured on the machine at
hand, each ending in a verdict that says where it was measured (result.py). speed.py and training.py hold the claims,
registry.py names them and runs a selection (`normbench claims`). Nothing is imported here, so that a claim module
importing result.py loads no other claim."""
