"""Plugs for restoration frameworks; each module imports its framework only when used.

- :mod:`topiq_loss.integrations.basicsr`: BasicSR (loss, metrics, train entry point).
- :mod:`topiq_loss.integrations.trainner_redux`: traiNNer-redux (loss, metrics).
- :mod:`topiq_loss.integrations.neosr`: neosr (loss, metrics).

See docs/integrations.md for the configuration of each.
"""
