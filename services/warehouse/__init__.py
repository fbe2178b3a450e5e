"""The PostgreSQL projection of the topics: the API's read models and the finance warehouse."""
