"""The sync engine's shared pieces: record keys and handles, the window rule, the link store's
settle rule and the pass ending (failures, queue, auto-replay). It knows no system: system packages
and pairs import it, never the other way round."""
