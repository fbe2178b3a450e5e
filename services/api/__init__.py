"""The administration API: budgets, allocation, status and audit over HTTP."""
