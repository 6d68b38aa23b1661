"""Actuators behind one interface, and the scheduler that fires them after the travel delay.

The only module that talks to GPIO/PWM/serial. Device classes are injected (``gpio_class``,
``pwm_class``, ``serial_class``) so tests drive fakes; by default they come from
python-periphery / pyserial, imported only when such an actuator is built.
"""

import collections
import heapq
import logging
import os
import sqlite3
import threading
import time
from typing import Callable, Dict, Optional

LOG = logging.getLogger(__name__)

SERIAL_COMMAND = "BIN {bin}\n"
# What a serial command line is sent as. ASCII unless sort.yaml's actuator.serial.encoding says the
# controller reads UTF-8; sort.yaml's check refuses a bin the chosen encoding cannot send.
SERIAL_ENCODINGS = ("ascii", "utf-8")


# How to install what each actuator needs (its errors and install.sh's check say it)
INSTALL_PERIPHERY = "sudo pip3 install python-periphery"
INSTALL_PYSERIAL = "sudo apt-get install python3-serial"


class ActuatorError(Exception):
    """An actuator could not move an item to a bin."""


class ActuatorPackageError(ActuatorError):
    """The package an actuator needs is not installed: no restart brings it (the service exits 78)."""


class Actuator:
    """Moves the item to ``bin_name``. ``ref`` identifies the decision (for logs/journals)."""

    def open(self) -> None:
        """Acquire the device."""

    def actuate(self, bin_name: str, ref: Optional[int] = None) -> None:
        """Fire for one item; raise ``ActuatorError`` on failure."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the device."""


class SimulatedActuator(Actuator):
    """Records the last ``KEEP`` commands in ``self.commands`` (a trial run of months stays small; the journal, if
    given, has them all) and appends them to ``journal`` if given, one line
    ``ref bin time`` each, flushed, so a killed process leaves a complete record). ``fail_bins``
    always fail and every ``fail_every``-th call fails (fault injection)."""

    KEEP = 10000

    def __init__(self, journal: Optional[str] = None, fail_bins=(), fail_every: int = 0):
        self.commands = collections.deque(maxlen=self.KEEP)  # type: Deque[Tuple[float, str, Optional[int]]]
        self.journal = journal
        self.fail_bins = set(fail_bins)
        self.fail_every = int(fail_every)
        self.calls = 0
        self._file = None

    def open(self) -> None:
        if self.journal:
            self._file = open(self.journal, "a", encoding="utf-8")

    def actuate(self, bin_name: str, ref: Optional[int] = None) -> None:
        self.calls += 1
        if bin_name in self.fail_bins or (self.fail_every and self.calls % self.fail_every == 0):
            raise ActuatorError("simulated failure for bin %r (call %d)" % (bin_name, self.calls))
        now = time.time()
        self.commands.append((now, bin_name, ref))
        if self._file is not None:
            self._file.write("%s %s %.6f\n" % (ref, bin_name, now))
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class GpioPulseActuator(Actuator):
    """One GPIO output line per bin, pulsed high for ``pulse_s`` (python-periphery ``GPIO``).

    ``lines``: {bin: {"chip": "/dev/gpiochip2", "line": 13}} (Dev Board pin 37).
    """

    def __init__(self, lines: Dict[str, Dict], pulse_s: float = 0.1, gpio_class=None,
                 sleep: Callable[[float], None] = time.sleep):
        if not lines:
            raise ActuatorError("actuator.gpio: map each bin to {chip, line}")
        self.lines = lines
        self.pulse_s = pulse_s
        self.gpio_class = gpio_class
        self.sleep = sleep
        self.gpios = {}  # type: Dict[str, object]

    def open(self) -> None:
        cls = self.gpio_class
        if cls is None:
            try:
                from periphery import GPIO as cls
            except ImportError:
                raise ActuatorPackageError("the gpio actuator needs python-periphery: `%s`" % INSTALL_PERIPHERY)
        for bin_name, spec in self.lines.items():
            try:
                self.gpios[bin_name] = cls(spec["chip"], int(spec["line"]), "out")
            except Exception as exc:  # periphery raises GPIOError (an IOError)
                raise ActuatorError("actuator.gpio.%s: cannot open %s line %s (%s); check the pin and that the "
                                    "service user is in the gpio group" % (bin_name, spec.get("chip"), spec.get("line"), exc))

    def actuate(self, bin_name: str, ref: Optional[int] = None) -> None:
        gpio = self.gpios.get(bin_name)
        if gpio is None:
            raise ActuatorError("actuator.gpio has no line for bin %r (bins with lines: %s)" % (bin_name, sorted(self.gpios)))
        try:
            gpio.write(True)
            self.sleep(self.pulse_s)
        except Exception as exc:
            raise ActuatorError("GPIO pulse for bin %r failed: %s" % (bin_name, exc))
        finally:
            try:
                gpio.write(False)
            except Exception:  # the line state is unknown; the fault is already being raised
                LOG.exception("could not reset GPIO for bin %s", bin_name)

    def close(self) -> None:
        for gpio in self.gpios.values():
            gpio.close()
        self.gpios = {}


class PwmServoActuator(Actuator):
    """A servo on one PWM channel (periphery ``PWM(chip, channel)``) moved to a duty cycle per bin,
    held ``settle_s``, then returned to ``home`` (if set)."""

    def __init__(self, chip: int, channel: int, positions: Dict[str, float], frequency_hz: float = 50.0,
                 settle_s: float = 0.3, home: Optional[float] = None, pwm_class=None,
                 sleep: Callable[[float], None] = time.sleep):
        for name, duty in positions.items():
            if not 0.0 <= float(duty) <= 1.0:
                raise ActuatorError("actuator.pwm.positions.%s: duty cycle %r is outside [0, 1]" % (name, duty))
        self.chip, self.channel = int(chip), int(channel)
        self.positions = positions
        self.frequency_hz = frequency_hz
        self.settle_s = settle_s
        self.home = home
        self.pwm_class = pwm_class
        self.sleep = sleep
        self.pwm = None

    def open(self) -> None:
        cls = self.pwm_class
        if cls is None:
            try:
                from periphery import PWM as cls
            except ImportError:
                raise ActuatorPackageError("the pwm actuator needs python-periphery: `%s`" % INSTALL_PERIPHERY)
        try:
            self.pwm = cls(self.chip, self.channel)
            self.pwm.frequency = self.frequency_hz
            self.pwm.duty_cycle = self.home if self.home is not None else 0.0
            self.pwm.enable()
        except Exception as exc:
            raise ActuatorError("actuator.pwm: cannot open PWM chip %d channel %d (%s)" % (self.chip, self.channel, exc))

    def actuate(self, bin_name: str, ref: Optional[int] = None) -> None:
        if bin_name not in self.positions:
            raise ActuatorError("actuator.pwm.positions has no position for bin %r" % bin_name)
        try:
            self.pwm.duty_cycle = float(self.positions[bin_name])
            self.sleep(self.settle_s)
            if self.home is not None:
                self.pwm.duty_cycle = float(self.home)
        except Exception as exc:
            raise ActuatorError("PWM move to bin %r failed: %s" % (bin_name, exc))

    def close(self) -> None:
        if self.pwm is not None:
            self.pwm.disable()
            self.pwm.close()
            self.pwm = None


class SerialActuator(Actuator):
    """Sends ``command.format(bin=..., ref=...)`` on a serial port (pyserial), encoded as
    ``encoding`` (ASCII by default), and, when ``ack`` is set, requires a reply line starting with it."""

    def __init__(self, port: str, baudrate: int = 115200, command: str = SERIAL_COMMAND,
                 ack: Optional[str] = None, timeout_s: float = 0.5, serial_class=None, encoding: str = "ascii"):
        if encoding not in SERIAL_ENCODINGS:
            raise ActuatorError("actuator.serial.encoding: %r is not one of %s"
                                % (encoding, ", ".join(SERIAL_ENCODINGS)))
        self.port, self.baudrate, self.command = port, int(baudrate), command
        self.ack, self.timeout_s, self.encoding = ack, timeout_s, encoding
        self.serial_class = serial_class
        self.conn = None

    def open(self) -> None:
        cls = self.serial_class
        if cls is None:
            try:
                from serial import Serial as cls
            except ImportError:
                raise ActuatorPackageError("the serial actuator needs pyserial: `%s`" % INSTALL_PYSERIAL)
        try:
            self.conn = cls(self.port, self.baudrate, timeout=self.timeout_s)
        except Exception as exc:
            raise ActuatorError("actuator.serial: cannot open %s (%s)" % (self.port, exc))

    def actuate(self, bin_name: str, ref: Optional[int] = None) -> None:
        line = self.command.format(bin=bin_name, ref=ref)
        try:
            self.conn.write(line.encode(self.encoding))
            self.conn.flush()
            if self.ack:
                reply = self.conn.readline().decode(self.encoding, "replace").strip()
                if not reply.startswith(self.ack):
                    raise ActuatorError("serial %s: expected a reply starting with %r to %r, got %r"
                                        % (self.port, self.ack, line.strip(), reply))
        except ActuatorError:
            raise
        except Exception as exc:
            raise ActuatorError("serial %s: sending %r failed: %s" % (self.port, line.strip(), exc))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def build_actuator(spec: Dict, device_classes: Optional[Dict] = None) -> Actuator:
    """The actuator described by sort.yaml's ``actuator`` table. ``device_classes`` may hold
    ``gpio``/``pwm``/``serial`` classes to inject."""
    classes = device_classes or {}
    kind = spec.get("type", "simulated")
    if kind == "simulated":
        return SimulatedActuator(spec.get("journal"), spec.get("fail_bins", ()), int(spec.get("fail_every", 0)))
    if kind == "gpio":
        return GpioPulseActuator(spec.get("gpio") or {}, float(spec.get("pulse_s", 0.1)), classes.get("gpio"))
    if kind == "pwm":
        pwm = spec.get("pwm") or {}
        if "positions" not in pwm:
            raise ActuatorError("actuator.pwm.positions: map each bin to a duty cycle")
        return PwmServoActuator(pwm.get("chip", 0), pwm.get("channel", 0), pwm["positions"],
                                float(pwm.get("frequency_hz", 50.0)), float(pwm.get("settle_s", 0.3)),
                                pwm.get("home"), classes.get("pwm"))
    if kind == "serial":
        ser = spec.get("serial") or {}
        if "port" not in ser:
            raise ActuatorError("actuator.serial.port: name the serial device, e.g. /dev/ttyUSB0")
        return SerialActuator(ser["port"], ser.get("baudrate", 115200), ser.get("command", SERIAL_COMMAND),
                              ser.get("ack"), float(ser.get("timeout_s", 0.5)), classes.get("serial"),
                              ser.get("encoding", "ascii"))
    raise ActuatorError("actuator.type %r is not one of simulated, gpio, pwm, serial" % (kind,))


LATE_TOLERANCE_S = 0.5  # an actuation this late (conveyor) would move the gate under the next item
FAILING_IN_A_ROW = 3  # this many actuations in a row failing is a problem the health check reports
STALL_S = 15.0  # one actuation (retries and fail-safe included) running longer than this is a hung device


class ActuationScheduler:
    """Fires decisions at their due time in a worker thread.

    Protocol per item (so a restart never doubles an actuation): ``journal.mark_attempt(id)`` is
    made durable BEFORE the actuator moves; then ``mark_done(id, bin, attempts, status, latency_ms)``.
    Failures are retried ``retries`` times; then the fail-safe bin is tried and ``on_fault`` is
    called. ``journal`` is the event log (or any object with those two methods).

    Times are on ``clock`` (monotonic by default: a wall-clock step from NTP moves no actuation).
    With ``late_tolerance_s`` (conveyors), an actuation that comes up later than that after its due
    time is not fired (the item has passed the gate; moving it now would divert the next item): it is
    marked ``missed`` with a fault. A journal that cannot be written (disk full, database locked) is
    logged and the item still moves: losing the record costs less than losing the item.
    """

    def __init__(self, actuator: Actuator, journal, fail_safe_bin: str, retries: int = 2,
                 retry_delay_s: float = 0.05, on_fault: Optional[Callable[[str, str, Optional[int]], None]] = None,
                 on_actuated: Optional[Callable[[str, float], None]] = None,
                 late_tolerance_s: Optional[float] = None, clock: Callable[[], float] = time.monotonic):
        self.actuator = actuator
        self.journal = journal
        self.fail_safe_bin = fail_safe_bin
        self.retries = retries
        self.retry_delay_s = retry_delay_s
        self.on_fault = on_fault or (lambda kind, msg, ref: None)
        self.on_actuated = on_actuated or (lambda bin_name, latency: None)
        self.late_tolerance_s = late_tolerance_s
        self.clock = clock
        self.journal_errors = 0  # journal writes that failed (the items still moved)
        self.missed = 0  # actuations too late to fire
        self.failed_in_a_row = 0  # actuations in a row whose bin failed (the item went to the fail-safe bin or none)
        self._last_failure = ""
        self._busy_since = None  # type: Optional[float]  clock() when the actuation in hand started
        self._heap = []  # type: List[Tuple[float, int, str, float]]
        self._cond = threading.Condition()
        self._stopping = False
        self._stop_deadline = None  # type: Optional[float]
        self._thread = threading.Thread(target=self._run, name="actuation", daemon=True)

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def schedule(self, ref: int, bin_name: str, due: float, first_seen: float) -> None:
        """Fire ``bin_name`` for decision ``ref`` at ``due`` (on ``clock``; ``first_seen`` too)."""
        with self._cond:
            heapq.heappush(self._heap, (due, ref, bin_name, first_seen))
            self._cond.notify()

    def pending(self) -> int:
        """Number of actuations not yet fired."""
        with self._cond:
            return len(self._heap)

    def stalled(self, limit_s: float = STALL_S) -> Optional[str]:
        """Why actuations have stopped (the thread ended, or one actuation has run over ``limit_s``), or None."""
        if not self._thread.is_alive():
            return None if self._stopping or self._thread.ident is None else "the actuation thread has stopped"
        since = self._busy_since
        if since is not None and self.clock() - since > limit_s:
            return ("one actuation has run for %.0f s (the actuator does not answer); %d more wait"
                    % (self.clock() - since, self.pending()))
        return None

    def failing(self) -> Optional[str]:
        """Why items are not reaching their bins (the last ``FAILING_IN_A_ROW`` actuations or more all failed, the
        last one named), or None: the service runs on, each item logged as failed, but the health check says so."""
        if self.failed_in_a_row < FAILING_IN_A_ROW:
            return None
        return "the last %d actuations failed (the last: %s)" % (self.failed_in_a_row, self._last_failure)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if not self._heap:
                        if self._stopping:
                            return
                        self._cond.wait(0.5)
                        continue
                    wait = self._heap[0][0] - self.clock()
                    if wait <= 0:
                        due, ref, bin_name, first_seen = heapq.heappop(self._heap)
                        break
                    self._cond.wait(min(wait, 0.5))
            self._busy_since = self.clock()
            try:
                late = self._busy_since - due
                if self.late_tolerance_s is not None and late > self.late_tolerance_s:
                    self._miss(ref, bin_name, late, first_seen)
                else:
                    self._fire(ref, bin_name, first_seen)
            except Exception:  # never let one item end the thread: the next ones must still move
                LOG.exception("actuation of decision %s failed unexpectedly", ref)
            finally:
                self._busy_since = None

    def _journal(self, method: str, *args) -> None:
        try:
            getattr(self.journal, method)(*args)
        except sqlite3.Error as exc:  # a full disk or a locked database (anything else is a bug: _run logs it)
            self.journal_errors += 1
            if self.journal_errors == 1 or self.journal_errors % 100 == 0:
                LOG.error("event log: %s%r failed (%s: %s); actuations go on without their record (%d failed so "
                          "far)", method, args, type(exc).__name__, exc, self.journal_errors)

    def _fault(self, kind: str, message: str, ref: Optional[int]) -> None:
        try:
            self.on_fault(kind, message, ref)
        except Exception as exc:
            LOG.error("%s (and recording this fault failed: %s)", message, exc)

    def _since(self, first_seen: float) -> float:
        """Milliseconds from an item's first sight to now, on the scheduler's (monotonic) clock: a wall-clock
        step (NTP on a board without a battery clock) moves neither end."""
        return (self.clock() - first_seen) * 1000.0

    def _miss(self, ref: int, bin_name: str, late: float, first_seen: float) -> None:
        self.missed += 1
        self._journal("mark_done", ref, None, 0, "missed", self._since(first_seen))
        self._fault("actuator", "decision %d (bin %r) came up %.2f s after its due time, past the %.2f s tolerance "
                    "(the actuator was busy or the service stalled): not fired, the item has passed the gate "
                    "and moving now would divert the next one" % (ref, bin_name, late, self.late_tolerance_s), ref)

    def _fire(self, ref: int, bin_name: str, first_seen: float) -> None:
        self._journal("mark_attempt", ref)
        attempts, error = 0, None
        for attempt in range(self.retries + 1):
            attempts += 1
            try:
                self.actuator.actuate(bin_name, ref)
                error = None
                break
            except Exception as exc:  # any device error counts as a failed attempt
                error = exc
                if attempt < self.retries:
                    time.sleep(self.retry_delay_s)
        if error is None:
            self.failed_in_a_row = 0
            latency = self._since(first_seen)
            self._journal("mark_done", ref, bin_name, attempts, "actuated", latency)
            self.on_actuated(bin_name, latency)
            return
        message = "bin %r failed after %d attempts (%s); sending the item to fail-safe bin %r" % (
            bin_name, attempts, error, self.fail_safe_bin)
        self.failed_in_a_row += 1
        self._last_failure = "bin %r: %s" % (bin_name, error)
        self._fault("actuator", message, ref)
        if bin_name != self.fail_safe_bin:
            try:
                self.actuator.actuate(self.fail_safe_bin, ref)
            except Exception as exc:
                self._fault("actuator", "fail-safe bin %r failed too (%s)" % (self.fail_safe_bin, exc), ref)
            else:
                latency = self._since(first_seen)
                self._journal("mark_done", ref, self.fail_safe_bin, attempts + 1, "failsafe", latency)
                self.on_actuated(self.fail_safe_bin, latency)
                return
        self._journal("mark_done", ref, None, attempts + 1, "failed", self._since(first_seen))

    def stop(self, timeout: float = 15.0) -> None:
        """Fire every pending actuation at its due time (items are still travelling), then stop. Waits
        ``timeout`` seconds at most, counted from the first call: calling it again waits no longer."""
        with self._cond:
            self._stopping = True
            if self._stop_deadline is None:
                self._stop_deadline = self.clock() + timeout
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(max(0.0, self._stop_deadline - self.clock()))
