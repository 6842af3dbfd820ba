"""The experiment harness: a plan of named runs, the runner that trains,
evaluates and diagnoses each, and the report (tables, JSON, plots).

    plan_schema  the plan's typed runs (`ExperimentPlan`, `ExperimentRun`),
             parsed and checked without the model code
    plan     the plan read, checked against the job's config and
             resolved into run configs
    runner   train / evaluate / diagnose one run, reuse finished rows,
             resume; `run_experiment` for a whole plan
    report   results.json, results.md (mean ± std over seeds) and plots
"""
