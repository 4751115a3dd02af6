"""The reliability and security battery (threat model: docs/threat-model.md)."""
