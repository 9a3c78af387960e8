"""The application layer: repository and command handling over the event store."""

from eskit.application.commands import AlsoAppend, CommandBus, CommandContext, CommandResult
from eskit.application.repository import Loaded, Repository

__all__ = ["AlsoAppend", "CommandBus", "CommandContext", "CommandResult", "Loaded", "Repository"]
