"""Pure rules: records, errors, schedules, templates, contracts. Imports no AWS, storage or web code."""
