"""nets: classic neural models of language and vision as JAX research tools."""

from nets import xla_defaults as _xla_defaults

_xla_defaults.apply()  # before any JAX computation starts the backend
_xla_defaults.keep_heap()
