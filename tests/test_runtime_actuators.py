"""Each actuator against a fake device, and the scheduler's retry / fail-safe / no-double protocol."""

import re
import sqlite3
import sys
import threading
import time

import pytest

from edge_trash.edge_runtime.actuators import (ActuationScheduler, ActuatorError, GpioPulseActuator,
                                               PwmServoActuator, SerialActuator, SimulatedActuator, build_actuator)


class FakeGPIO:
    """Records (chip, line, value) writes like periphery.GPIO."""

    opened = []
    writes = []
    fail_writes = 0

    def __init__(self, path, line, direction):
        if path == "/dev/gpiochip9":
            raise OSError("No such file or directory: '/dev/gpiochip9'")
        assert direction == "out"
        self.path, self.line = path, line
        FakeGPIO.opened.append((path, line))
        self.closed = False

    def write(self, value):
        if value and FakeGPIO.fail_writes:
            FakeGPIO.fail_writes -= 1
            raise OSError("EIO")
        FakeGPIO.writes.append((self.path, self.line, value))

    def close(self):
        self.closed = True


@pytest.fixture(autouse=True)
def reset_fake_gpio():
    FakeGPIO.opened, FakeGPIO.writes, FakeGPIO.fail_writes = [], [], 0


def test_gpio_pulses_the_bins_line_high_then_low():
    sleeps = []
    act = GpioPulseActuator({"plastic": {"chip": "/dev/gpiochip2", "line": 13},
                             "metal": {"chip": "/dev/gpiochip4", "line": 10}}, pulse_s=0.1,
                            gpio_class=FakeGPIO, sleep=sleeps.append)
    act.open()
    assert sorted(FakeGPIO.opened) == [("/dev/gpiochip2", 13), ("/dev/gpiochip4", 10)]
    act.actuate("metal")
    assert FakeGPIO.writes == [("/dev/gpiochip4", 10, True), ("/dev/gpiochip4", 10, False)]
    assert sleeps == [0.1]
    with pytest.raises(ActuatorError, match="no line for bin 'glass'"):
        act.actuate("glass")
    act.close()


def test_gpio_failure_resets_the_line_and_names_the_bin():
    act = GpioPulseActuator({"plastic": {"chip": "/dev/gpiochip2", "line": 13}}, gpio_class=FakeGPIO,
                            sleep=lambda s: None)
    act.open()
    FakeGPIO.fail_writes = 1
    with pytest.raises(ActuatorError, match="GPIO pulse for bin 'plastic' failed: EIO"):
        act.actuate("plastic")
    assert FakeGPIO.writes == [("/dev/gpiochip2", 13, False)]


def test_gpio_open_error_names_the_config_key():
    act = GpioPulseActuator({"plastic": {"chip": "/dev/gpiochip9", "line": 1}}, gpio_class=FakeGPIO)
    with pytest.raises(ActuatorError, match="actuator.gpio.plastic: cannot open /dev/gpiochip9 line 1"):
        act.open()


class FakePWM:
    def __init__(self, chip, channel):
        self.chip, self.channel = chip, channel
        self.history = []
        self.enabled = False
        self.frequency = None

    @property
    def duty_cycle(self):
        return self.history[-1]

    @duty_cycle.setter
    def duty_cycle(self, value):
        self.history.append(value)

    def enable(self):
        self.enabled = True

    def disable(self):
        self.enabled = False

    def close(self):
        pass


def test_pwm_servo_moves_to_the_bin_position_and_home():
    act = PwmServoActuator(0, 0, {"plastic": 0.05, "metal": 0.1}, frequency_hz=50, settle_s=0.0, home=0.075,
                           pwm_class=FakePWM, sleep=lambda s: None)
    act.open()
    act.actuate("metal")
    act.actuate("plastic")
    assert act.pwm.frequency == 50 and act.pwm.enabled
    assert act.pwm.history == [0.075, 0.1, 0.075, 0.05, 0.075]
    with pytest.raises(ActuatorError, match="no position for bin 'glass'"):
        act.actuate("glass")


def test_pwm_rejects_duty_cycles_outside_0_1():
    with pytest.raises(ActuatorError, match="actuator.pwm.positions.metal: duty cycle 7 is outside"):
        PwmServoActuator(0, 0, {"metal": 7}, pwm_class=FakePWM)


class FakeSerial:
    def __init__(self, port, baudrate, timeout):
        self.port, self.baudrate, self.timeout = port, baudrate, timeout
        self.written = []
        self.replies = []

    def write(self, data):
        self.written.append(data)

    def flush(self):
        pass

    def readline(self):
        return self.replies.pop(0) if self.replies else b""

    def close(self):
        pass


def test_serial_sends_the_command_and_checks_the_ack():
    act = SerialActuator("/dev/ttyUSB0", 9600, command="BIN {bin} {ref}\n", ack="OK", serial_class=FakeSerial)
    act.open()
    act.conn.replies = [b"OK 1\n", b"ERR jam\n"]
    act.actuate("metal", ref=7)
    assert act.conn.written == [b"BIN metal 7\n"] and act.conn.baudrate == 9600
    with pytest.raises(ActuatorError, match="expected a reply starting with 'OK' to 'BIN paper 8', got 'ERR jam'"):
        act.actuate("paper", ref=8)


def test_build_actuator_from_config_and_errors():
    assert isinstance(build_actuator({"type": "simulated"}), SimulatedActuator)
    gpio = build_actuator({"type": "gpio", "gpio": {"a": {"chip": "/dev/gpiochip0", "line": 6}}},
                          {"gpio": FakeGPIO})
    gpio.open()
    assert FakeGPIO.opened == [("/dev/gpiochip0", 6)]
    with pytest.raises(ActuatorError, match="actuator.serial.port: name the serial device"):
        build_actuator({"type": "serial", "serial": {}})
    with pytest.raises(ActuatorError, match="actuator.pwm.positions"):
        build_actuator({"type": "pwm", "pwm": {}})


class Journal:
    """The scheduler's journal protocol, recorded in order."""

    def __init__(self):
        self.events = []

    def mark_attempt(self, ref):
        self.events.append(("attempt", ref))

    def mark_done(self, ref, bin_name, attempts, status, latency_ms):
        self.events.append(("done", ref, bin_name, attempts, status))


def _run_scheduler(actuator, jobs, retries=2):
    journal, faults = Journal(), []
    sched = ActuationScheduler(actuator, journal, "reject", retries=retries, retry_delay_s=0.0,
                               on_fault=lambda kind, msg, ref: faults.append((kind, ref, msg)))
    sched.start()
    for ref, bin_name, delay in jobs:
        sched.schedule(ref, bin_name, time.monotonic() + delay, time.monotonic())
    sched.stop()
    return journal.events, faults


def test_scheduler_fires_in_due_order_after_the_travel_delay():
    act = SimulatedActuator()
    start = time.time()
    events, faults = _run_scheduler(act, [(1, "can", 0.15), (2, "bottle", 0.05)])
    assert [(b, r) for _, b, r in act.commands] == [("bottle", 2), ("can", 1)]
    assert act.commands[0][0] - start >= 0.05 and act.commands[1][0] - start >= 0.15
    assert events == [("attempt", 2), ("done", 2, "bottle", 1, "actuated"),
                      ("attempt", 1), ("done", 1, "can", 1, "actuated")]
    assert faults == []


def test_scheduler_retries_then_uses_the_fail_safe_bin_and_raises_a_fault():
    act = SimulatedActuator(fail_every=2)  # call 2 fails, call 3 (retry) succeeds
    events, faults = _run_scheduler(act, [(1, "can", 0.0), (2, "can", 0.01)])
    assert events[-1] == ("done", 2, "can", 2, "actuated") and faults == []
    act = SimulatedActuator(fail_bins=["can"])
    events, faults = _run_scheduler(act, [(5, "can", 0.0)])
    assert act.calls == 4 and [(b, r) for _, b, r in act.commands] == [("reject", 5)]
    assert events == [("attempt", 5), ("done", 5, "reject", 4, "failsafe")]
    assert [(k, r) for k, r, _ in faults] == [("actuator", 5)]
    assert "bin 'can' failed after 3 attempts" in faults[0][2]


def test_scheduler_reports_failure_when_fail_safe_fails_too():
    act = SimulatedActuator(fail_bins=["can", "reject"])
    events, faults = _run_scheduler(act, [(3, "can", 0.0)], retries=0)
    assert events == [("attempt", 3), ("done", 3, None, 2, "failed")]
    assert [k for k, _, _ in faults] == ["actuator", "actuator"] and "fail-safe bin 'reject' failed" in faults[1][2]


def test_actuations_failing_in_a_row_are_a_problem_until_one_moves():
    act = SimulatedActuator(fail_bins=["can", "reject"])
    sched = ActuationScheduler(act, Journal(), "reject", retries=0, retry_delay_s=0.0)
    sched.start()
    for ref in (1, 2):
        sched.schedule(ref, "can", time.monotonic(), time.monotonic())
    deadline = time.monotonic() + 5
    while sched.failed_in_a_row < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sched.failing() is None  # two in a row: not yet
    sched.schedule(3, "can", time.monotonic(), time.monotonic())
    while sched.failed_in_a_row < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sched.failing() == ("the last 3 actuations failed (the last: bin 'can': simulated failure for bin 'can' "
                               "(call 5))")
    act.fail_bins = set()
    sched.schedule(4, "bottle", time.monotonic(), time.monotonic())
    sched.stop()
    assert sched.failed_in_a_row == 0 and sched.failing() is None


def test_simulated_journal_is_flushed_per_command(tmp_path):
    path = tmp_path / "journal.txt"
    act = SimulatedActuator(journal=str(path))
    act.open()
    act.actuate("can", 4)
    assert path.read_text().split()[:2] == ["4", "can"]  # visible before close
    act.close()


class BrokenJournal(Journal):
    """An event log on a full disk: every write raises, as sqlite3 does."""

    def mark_attempt(self, ref):
        raise sqlite3.OperationalError("database or disk is full")

    def mark_done(self, ref, bin_name, attempts, status, latency_ms):
        raise sqlite3.OperationalError("database or disk is full")


def test_a_journal_that_cannot_be_written_still_lets_every_item_move(caplog):
    act = SimulatedActuator(fail_bins=["can"])

    def on_fault(kind, message, ref):
        raise sqlite3.OperationalError("database or disk is full")  # the fault cannot be recorded either

    sched = ActuationScheduler(act, BrokenJournal(), "reject", retries=0, retry_delay_s=0.0, on_fault=on_fault)
    sched.start()
    now = time.monotonic()
    for ref, bin_name in [(1, "bottle"), (2, "can"), (3, "carton")]:
        sched.schedule(ref, bin_name, now + 0.01 * ref, now)
    sched.stop()
    assert [(b, r) for _, b, r in act.commands] == [("bottle", 1), ("reject", 2), ("carton", 3)]
    assert sched.journal_errors == 6 and sched.stalled() is None and sched.pending() == 0
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors[0] == ("event log: mark_attempt(1,) failed (OperationalError: database or disk is full); "
                         "actuations go on without their record (1 failed so far)")
    assert any(m.startswith("bin 'can' failed after 1 attempts") and m.endswith(
        "(and recording this fault failed: database or disk is full)") for m in errors)


def test_a_conveyor_actuation_past_its_tolerance_is_not_fired_but_recorded_missed():
    act, journal, faults = SimulatedActuator(), Journal(), []
    sched = ActuationScheduler(act, journal, "reject", on_fault=lambda kind, msg, ref: faults.append((kind, ref, msg)),
                               late_tolerance_s=0.5)
    sched.start()
    now = time.monotonic()
    sched.schedule(7, "can", now - 2.0, now - 3.0)  # the actuator was busy: 2 s late, the item is gone
    sched.schedule(8, "bottle", now - 0.2, now - 1.0)  # late within the tolerance: still fired
    sched.stop()
    assert [(b, r) for _, b, r in act.commands] == [("bottle", 8)]
    assert journal.events == [("done", 7, None, 0, "missed"), ("attempt", 8), ("done", 8, "bottle", 1, "actuated")]
    assert sched.missed == 1 and [(k, r) for k, r, _ in faults] == [("actuator", 7)]
    assert re.match(r"decision 7 \(bin 'can'\) came up 2\.\d\d s after its due time, past the 0\.50 s tolerance "
                    r"\(the actuator was busy or the service stalled\): not fired, the item has passed the gate "
                    r"and moving now would divert the next one$", faults[0][2])
    # on a platform (no tolerance) the item waits where it is: a late actuation still sorts it
    act, journal = SimulatedActuator(), Journal()
    sched = ActuationScheduler(act, journal, "reject")
    sched.start()
    sched.schedule(7, "can", time.monotonic() - 2.0, time.monotonic() - 3.0)
    sched.stop()
    assert [(b, r) for _, b, r in act.commands] == [("can", 7)]


class TimedActuator(SimulatedActuator):
    def actuate(self, bin_name, ref=None):
        self.fired_at = time.monotonic()
        super().actuate(bin_name, ref)


def test_a_wall_clock_step_moves_no_actuation(monkeypatch):
    act = TimedActuator()
    sched = ActuationScheduler(act, Journal(), "reject", late_tolerance_s=0.5)
    sched.start()
    start = time.monotonic()
    sched.schedule(1, "can", start + 0.3, start)
    wall = time.time
    monkeypatch.setattr(time, "time", lambda: wall() + 3600.0)  # NTP steps the clock an hour forward
    sched.stop()
    assert [(b, r) for _, b, r in act.commands] == [("can", 1)]
    assert 0.3 <= act.fired_at - start < 1.0


def test_a_hung_actuator_is_reported_as_stalled():
    release = threading.Event()

    class Hung(SimulatedActuator):
        def actuate(self, bin_name, ref=None):
            release.wait(10)

    sched = ActuationScheduler(Hung(), Journal(), "reject")
    sched.start()
    now = time.monotonic()
    sched.schedule(1, "can", now, now)
    sched.schedule(2, "can", now + 0.01, now)
    deadline = time.monotonic() + 5
    while sched.stalled(limit_s=0.2) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert re.match(r"one actuation has run for \d+ s \(the actuator does not answer\); 1 more wait$",
                    sched.stalled(limit_s=0.2))
    release.set()
    sched.stop()
    assert sched.stalled(limit_s=0.2) is None


@pytest.mark.parametrize("kind, spec, module, message", [
    ("gpio", {"gpio": {"a": {"chip": "/dev/gpiochip0", "line": 6}}}, "periphery",
     "the gpio actuator needs python-periphery: `sudo pip3 install python-periphery`"),
    ("serial", {"serial": {"port": "/dev/ttyUSB0"}}, "serial",
     "the serial actuator needs pyserial: `sudo apt-get install python3-serial`"),
])
def test_a_missing_actuator_package_is_a_package_error(monkeypatch, kind, spec, module, message):
    """A package no restart brings: the service exits 78 for it (ActuatorPackageError), not 1 every 5 s."""
    from edge_trash.edge_runtime.actuators import ActuatorPackageError

    monkeypatch.setitem(sys.modules, module, None)  # `import periphery` / `import serial` raise ImportError
    actuator = build_actuator(dict(spec, type=kind))
    with pytest.raises(ActuatorPackageError) as err:
        actuator.open()
    assert str(err.value) == message


def test_the_simulated_actuator_keeps_its_last_commands_only_and_its_journal_all(tmp_path):
    """The default sort.yaml's actuator: its list of commands grew ~100 B per item for as long as a trial ran."""
    from edge_trash.edge_runtime.actuators import SimulatedActuator

    class Keeps5(SimulatedActuator):
        KEEP = 5

    act = Keeps5(str(tmp_path / "journal.txt"))
    act.open()
    for ref in range(12):
        act.actuate("can", ref)
    act.close()
    assert [r for _, _, r in act.commands] == [7, 8, 9, 10, 11]
    assert [line.split()[0] for line in (tmp_path / "journal.txt").read_text().splitlines()] == [str(r) for r in
                                                                                                 range(12)]
    assert SimulatedActuator().commands.maxlen == SimulatedActuator.KEEP == 10000
