"""The project's XLA:CPU flags: added once, never over the user's own, and opt-out."""

import os

import pytest

from nets import xla_defaults


@pytest.fixture
def measured_jaxlib(monkeypatch):
  monkeypatch.setattr(xla_defaults, "_jaxlib_series", lambda: xla_defaults.MEASURED_JAXLIB)


def test_flags_are_appended_to_the_users(monkeypatch, measured_jaxlib):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
  assert xla_defaults.apply() == list(xla_defaults.CPU_FLAGS)
  flags = os.environ["XLA_FLAGS"].split()
  assert flags[0] == "--xla_force_host_platform_device_count=4"
  assert flags[1:] == list(xla_defaults.CPU_FLAGS)
  assert xla_defaults.apply() == []  # idempotent


def test_a_flag_the_user_set_is_left_alone(monkeypatch, measured_jaxlib):
  own = "--xla_cpu_experimental_ynn_fusion_type=dot"
  monkeypatch.setenv("XLA_FLAGS", own)
  assert xla_defaults.apply() == []
  assert os.environ["XLA_FLAGS"] == own


@pytest.mark.parametrize("env, series", [({"NETS_XLA_DEFAULTS": "0"}, None),
                                         ({}, (0, 99))])
def test_opt_out_and_other_jaxlib_series_add_nothing(monkeypatch, env, series):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  monkeypatch.setattr(xla_defaults, "_jaxlib_series",
                      lambda: series or xla_defaults.MEASURED_JAXLIB)
  assert xla_defaults.apply() == []
  assert "XLA_FLAGS" not in os.environ


def test_keep_heap_sets_glibc_malloc_and_can_be_turned_off(monkeypatch):
  monkeypatch.delenv("NETS_XLA_DEFAULTS", raising=False)
  monkeypatch.delenv("NETS_KEEP_HEAP", raising=False)
  import platform
  if platform.libc_ver()[0] != "glibc":
    pytest.skip("glibc malloc only")
  assert xla_defaults.keep_heap()  # `import nets` already did; setting it again is harmless
  monkeypatch.setenv("NETS_KEEP_HEAP", "0")
  assert not xla_defaults.keep_heap()


def test_keep_heap_does_nothing_without_glibc(monkeypatch):
  monkeypatch.delenv("NETS_KEEP_HEAP", raising=False)
  monkeypatch.setattr(xla_defaults.platform, "libc_ver", lambda: ("musl", "1.2"))
  assert not xla_defaults.keep_heap()
