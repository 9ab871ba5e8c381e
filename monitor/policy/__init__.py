"""Policy: declarative rules that turn health into actions on the sender
(pause, slow, resume with a ramp), suppressions and alerts, each stored with
the rule that fired and the evidence (monitor/policy/engine.py)."""
