"""Stand-ins for the outside world, as real aiohttp servers on loopback."""
