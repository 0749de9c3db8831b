"""Kiln in Kubeflow Pipelines: reusable components over Kiln's resources.

- `steps`: what each component does, as plain functions over `kiln.kube` (tested without KFP).
- `components`: the KFP components: `validate_dataset`, `submit_training_job`,
  `gate_model_version` and `roll_out_model_deployment`, each a lightweight Python component that
  runs in Kiln's image and calls its step.

`examples/kfp-pipeline/pipeline.py` composes them into a pipeline that compiles to KFP IR YAML
and runs locally with `kfp.local`.
"""
