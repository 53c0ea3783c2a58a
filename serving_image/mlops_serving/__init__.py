"""mlops-serving: the generic model server that every ModelDeployment runs."""
