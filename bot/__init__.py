"""WhatsApp conversation broker for Braze."""
