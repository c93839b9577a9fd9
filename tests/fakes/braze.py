"""The fake Braze is the simulator's stand-in: one implementation of Braze's wire format."""

from bot.sim.braze_standin import BrazeStandIn, Delivered

__all__ = ["BrazeStandIn", "Delivered"]
