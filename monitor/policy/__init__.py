"""Policy: declarative rules that turn health into actions on the sender
(pause, slow, resume with a ramp), suppressions and alerts, each stored with
the rule that fired and the evidence.

    rules.py     PolicyRule, compiled from [policy]; whether one holds for an assessment
    evaluate.py  PolicyEngine: rules over assessments -> actions started / ended (PolicyReport)
    actions.py   ActionChange, describe_target, action_json: what the floors above are told
    manual.py    the operator's actions (`repmon actions`)
    replay.py    what the rules would have done on stored history
    models.py    policy_actions
The policy imports health below it, never alerts: the reaction loop
(monitor/loop.py) announces its changes.
"""
