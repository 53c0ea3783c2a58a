"""mlops-operator: ModelVersion registry, ModelDeployment serving and DriftMonitor."""
