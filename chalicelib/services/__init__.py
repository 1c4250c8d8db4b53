"""Use cases behind the routes: tasks, agents, lifecycle, runs, events, previews."""
