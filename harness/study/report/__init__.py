"""What a study reports: the markdown and HTML pages, plots, the MLflow summary, the dashboard."""
