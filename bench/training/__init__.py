"""Training experiments: the data path's speed, recipe searches and budgets, risk against coverage."""
