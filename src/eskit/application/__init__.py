"""The application layer: repository and command handling over the event store."""

from eskit.application.commands import CommandBus, CommandContext, CommandResult
from eskit.application.repository import Loaded, Repository

__all__ = ["CommandBus", "CommandContext", "CommandResult", "Loaded", "Repository"]
