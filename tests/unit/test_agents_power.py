"""Power readers and board facts against fake sysfs trees laid out as the kernel documents them.

hwmon: Documentation/hwmon/sysfs-interface.rst, ina2xx.rst (power1_input in uW), ina3221.rst
(inN_input bus mV, currN_input mA, inN_label); powercap: Documentation/power/powercap/powercap.rst.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from device_agents.agent import bench as agent_bench
from device_agents.agent import facts as agent_facts
from device_agents.agent import power
from device_agents.agent.power import base, meter, rapl


def _write(root: Path, rel: str, value: object) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")


def _ina226(root: Path, hw: str = "hwmon0", uw: int = 3_250_000) -> None:
    _write(root, f"class/hwmon/{hw}/name", "ina226")
    _write(root, f"class/hwmon/{hw}/power1_input", uw)
    _write(root, f"class/hwmon/{hw}/update_interval", 2)


def _ina3221(root: Path, hw: str, labels: dict[int, str], mv: int, ma: int) -> None:
    _write(root, f"class/hwmon/{hw}/name", "ina3221")
    for ch in (1, 2, 3):
        _write(root, f"class/hwmon/{hw}/in{ch}_input", mv * ch)
        _write(root, f"class/hwmon/{hw}/curr{ch}_input", ma)
        _write(root, f"class/hwmon/{hw}/in{ch}_enable", 1 if ch in labels else 0)
        if ch in labels:
            _write(root, f"class/hwmon/{hw}/in{ch}_label", labels[ch])
        _write(root, f"class/hwmon/{hw}/in{ch + 3}_input", 12)  # shunt voltage channels, not bus


def test_ina226_reads_microwatts(tmp_path: Path) -> None:
    _ina226(tmp_path)
    readers = power.discover_power(str(tmp_path))
    assert len(readers) == 1
    r = readers[0]
    assert r.source == "hwmon" and r.read() == pytest.approx(3.25)
    assert r.interval_s == pytest.approx(0.002)


def test_ina219_without_update_interval_defaults_to_10ms(tmp_path: Path) -> None:
    _write(tmp_path, "class/hwmon/hwmon3/name", "ina219")
    _write(tmp_path, "class/hwmon/hwmon3/power1_input", 1_000_000)
    (r,) = power.discover_power(str(tmp_path))
    assert r.read() == pytest.approx(1.0) and r.interval_s == pytest.approx(0.01)


def test_ina3221_multiplies_bus_mv_by_ma_on_enabled_labelled_channels(tmp_path: Path) -> None:
    _ina3221(tmp_path, "hwmon1", {1: "5V", 3: "3V3"}, mv=5000, ma=200)
    (r,) = power.discover_power(str(tmp_path))
    assert r.source == "hwmon"
    assert "5V" in r.sensor and "3V3" in r.sensor
    # channel 1: 5000 mV * 200 mA = 1 W; channel 3: 15000 mV * 200 mA = 3 W; channel 2 disabled
    assert r.read() == pytest.approx(4.0)


def test_jetson_orin_uses_the_vdd_in_rail_and_is_labelled_jetson(tmp_path: Path) -> None:
    _ina3221(tmp_path, "hwmon2", {1: "VDD_IN", 2: "VDD_CPU_GPU_CV", 3: "VDD_SOC"}, mv=5000, ma=1000)
    _ina226(tmp_path, "hwmon0")
    readers = power.discover_power(str(tmp_path))
    assert [r.source for r in readers] == ["jetson", "hwmon"]  # best first
    assert readers[0].read() == pytest.approx(5.0)  # VDD_IN only: 5000 mV * 1000 mA


def test_rapl_sums_packages_and_unwraps_the_counter(tmp_path: Path) -> None:
    base = "class/powercap"
    _write(tmp_path, f"{base}/intel-rapl:0/name", "package-0")
    _write(tmp_path, f"{base}/intel-rapl:0/energy_uj", 999_000)
    _write(tmp_path, f"{base}/intel-rapl:0/max_energy_range_uj", 1_000_000)
    _write(tmp_path, f"{base}/intel-rapl:0:0/energy_uj", 5)  # a subzone (core): part of the package
    _write(tmp_path, f"{base}/intel-rapl:0:0/max_energy_range_uj", 1_000_000)
    (r,) = power.discover_power(str(tmp_path))
    assert r.source == "rapl" and "1 package" in r.sensor
    assert r.read() is None  # first reading only primes the counter
    time.sleep(0.05)
    _write(tmp_path, f"{base}/intel-rapl:0/energy_uj", 1_000)  # wrapped: 1000 uJ to the max + 1000
    watts = r.read()
    assert watts is not None
    assert rapl.RaplReader.delta(999_000, 1_000, 1_000_000) == 2_000
    assert 0.002 / 1.0 < watts < 0.002 / 0.04  # 2 mJ over ~50 ms


def test_no_sensor_means_no_readers(tmp_path: Path) -> None:
    assert power.discover_power(str(tmp_path)) == []


@pytest.mark.parametrize(
    ("line", "watts"),
    [("4.5", 4.5), ("W=2.25", 2.25), ("mW=1500", 1.5), ("V=5.0 A=0.4", 2.0), ("mV=5000,mA=100", 0.5)],
)
def test_meter_line_protocol(line: str, watts: float) -> None:
    assert meter.parse_meter_line(line) == pytest.approx(watts)


@pytest.mark.parametrize("line", ["", "# comment", "V=5", "W=abc", "hello"])
def test_meter_line_protocol_ignores_what_it_cannot_read(line: str) -> None:
    assert meter.parse_meter_line(line) is None


def test_meter_reader_reads_latest_value_from_a_real_pty() -> None:
    import os

    master, slave = os.openpty()
    try:
        reader = meter.MeterReader(os.ttyname(slave))
        os.write(master, b"W=1.0\nV=5 A=0.5\npartial")
        time.sleep(0.1)
        assert reader.read() == pytest.approx(2.5)
        reader.close()
    finally:
        os.close(master)
        os.close(slave)


def test_trapezoid_integration_and_mean_power() -> None:
    samples = [(0.0, 1.0), (1.0, 3.0), (3.0, 3.0)]
    assert base.integrate(samples) == pytest.approx(2.0 + 6.0)
    assert base.mean_power(samples) == pytest.approx(8.0 / 3.0)
    assert base.mean_power([(0.0, 4.0)]) == 4.0


class _Ramp(base.PowerReader):
    source = "hwmon"
    interval_s = 0.005

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def read(self) -> float:
        return 2.0 + (time.monotonic() - self.t0)


def test_sampler_collects_at_the_sensor_rate() -> None:
    samples = base.measure_window(_Ramp(), 0.2)
    assert len(samples) >= 10
    assert samples[0][1] < samples[-1][1]
    assert base.mean_power(samples) == pytest.approx(2.1, abs=0.05)


def test_energy_uses_sensor_idle_and_busy_power() -> None:
    bench = agent_bench.Bench.__new__(agent_bench.Bench)
    bench.args, bench.threads = {}, 1
    runner = {"samples_ns": [2_000_000, 2_000_000]}
    idle = [(0.0, 2.0), (1.0, 2.0)]
    busy = [(0.0, 5.0), (1.0, 5.0)]
    e = bench._energy(_Ramp(), idle, busy, runner)
    assert e["source"] == "hwmon" and e["idle_w"] == 2.0 and e["mean_w"] == 5.0
    assert e["total_j_per_inference"] == pytest.approx(0.010)
    assert e["active_j_per_inference"] == pytest.approx(0.006)


def test_energy_falls_back_to_the_profile_model() -> None:
    bench = agent_bench.Bench.__new__(agent_bench.Bench)
    bench.args, bench.threads = {"power_model": {"idle_w": 2.0, "per_core_w": 1.5}}, 2
    e = bench._energy(None, [], [], {"samples_ns": [1_000_000]})
    assert e["source"] == "model"
    assert e["total_j_per_inference"] == pytest.approx(0.005)
    assert e["active_j_per_inference"] == pytest.approx(0.003)


def _cpu(root: Path, n: int, gov: str, cur: int, mx: int) -> None:
    _write(root, f"devices/system/cpu/cpu{n}/cpufreq/scaling_governor", gov)
    _write(root, f"devices/system/cpu/cpu{n}/cpufreq/scaling_cur_freq", cur)
    _write(root, f"devices/system/cpu/cpu{n}/cpufreq/cpuinfo_max_freq", mx)


def test_facts_read_governors_frequencies_and_thermal_zones(tmp_path: Path) -> None:
    _cpu(tmp_path, 0, "performance", 2_400_000, 2_400_000)
    _cpu(tmp_path, 10, "schedutil", 1_000_000, 1_800_000)
    _write(tmp_path, "devices/system/cpu/cpufreq/policy0/x", 1)  # not a cpuN dir
    _write(tmp_path, "class/thermal/thermal_zone0/type", "cpu-thermal")
    _write(tmp_path, "class/thermal/thermal_zone0/temp", 51234)
    _write(tmp_path, "class/thermal/thermal_zone1/type", "cpu-thermal")
    _write(tmp_path, "class/thermal/thermal_zone1/temp", 40000)
    facts = agent_facts.Facts(str(tmp_path))
    snap = facts.snapshot()
    assert snap["governors"] == {"0": "performance", "10": "schedutil"}
    assert snap["freqs_khz"]["10"] == {"cur": 1_000_000, "max": 1_800_000}
    assert snap["temps_c"] == {"cpu-thermal": 51.234, "cpu-thermal.thermal_zone1": 40.0}


def test_throttle_flag_from_temperature_and_frequency() -> None:
    cool = {
        "temps_c": {"cpu": 50.0},
        "freqs_khz": {"0": {"cur": 2_400_000, "max": 2_400_000}},
        "governors": {},
    }
    hot = {
        "temps_c": {"cpu": 85.0},
        "freqs_khz": {"0": {"cur": 1_500_000, "max": 2_400_000}},
        "governors": {},
    }
    assert agent_facts.throttle_check(cool, cool, 80.0) == (False, [])
    flagged, reasons = agent_facts.throttle_check(cool, hot, 80.0)
    assert (
        flagged and any("temperature" in r for r in reasons) and any("frequency fell" in r for r in reasons)
    )
