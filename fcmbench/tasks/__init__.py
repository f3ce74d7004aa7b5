"""Task models: vision networks cut in two at the FPN."""

from fcmbench.tasks.base import TaskModel, TaskModelOptions

__all__ = ["TaskModel", "TaskModelOptions"]
