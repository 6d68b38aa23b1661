"""Device packaging: the systemd unit, install.sh, the device CLI entry points, and no TensorFlow."""

import configparser
import os
import shlex
import subprocess
import sys

from edge_trash.edge_runtime.__main__ import EXIT_CONFIG, build_parser

RUNTIME = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "edge_trash", "edge_runtime")
TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)


def test_systemd_unit_restarts_with_watchdog_and_valid_command():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(os.path.join(RUNTIME, "edge-trash.service"))
    service = unit["Service"]
    # always: a clean exit (SIGHUP or SIGINT, sent to reload sort.yaml) left the sorter stopped under on-failure
    assert service["Type"] == "notify" and service["Restart"] == "always"
    assert int(service["WatchdogSec"]) > 0 and service["KillSignal"] == "SIGTERM"
    argv = shlex.split(service["ExecStart"])
    assert argv[:3] == ["/usr/bin/python3", "-m", "edge_trash.edge_runtime"]
    args = build_parser().parse_args(argv[3:])
    assert (args.command, args.source, args.bundle) == ("run", "camera:0", "/opt/edge-trash/bundle")


def test_systemd_unit_never_gives_up_restarting():
    """A camera unplugged for a minute makes the service exit again and again (the capture gives up after 30
    failed reads); with a start limit (it was 10 starts in 300 s, RestartSec=2) systemd left the unit failed
    for good, even after the camera came back. StartLimitIntervalSec=0 turns the limit off."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(os.path.join(RUNTIME, "edge-trash.service"))
    assert unit["Unit"]["StartLimitIntervalSec"] == "0"
    assert unit["Service"]["RestartSec"] == "5" and unit["Service"]["Restart"] == "always"
    # nothing else may bring a limit back: no burst, no older [Service] spelling, no action on hitting it
    for section in ("Unit", "Service"):
        for key in ("StartLimitBurst", "StartLimitInterval", "StartLimitAction"):
            assert key not in unit[section], (section, key)
    assert "StartLimitIntervalSec" not in unit["Service"]


def test_systemd_unit_stops_on_a_configuration_error_only():
    """A broken sort.yaml or bundle exits EXIT_CONFIG, which the unit does not restart (it failed every 5 s
    forever); exit 1 (camera, TPU, disk, port) and the watchdog's kill still restart."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(os.path.join(RUNTIME, "edge-trash.service"))
    assert unit["Service"]["RestartPreventExitStatus"].split() == [str(EXIT_CONFIG)]
    assert "SuccessExitStatus" not in unit["Service"]  # 78 stays a failure: `systemctl status` shows it


def test_install_script_is_valid_sh_and_refuses_non_root_or_non_bundles(tmp_path):
    script = os.path.join(RUNTIME, "install.sh")
    assert subprocess.run(["sh", "-n", script]).returncode == 0
    proc = subprocess.run(["sh", script, str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert ("run as root" in proc.stderr) or ("is not an exported bundle" in proc.stderr)


def test_device_cli_help_via_python_m():
    proc = subprocess.run([sys.executable, "-m", "edge_trash.edge_runtime", "run", "--help"], capture_output=True,
                          text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0 and "--bundle" in proc.stdout and "dir:PATH[?fps=N]" in proc.stdout


def test_by_hand_command_runs_from_the_bundles_copy_of_the_runtime(tmp_path):
    from edge_trash.export.bundle import copy_device_runtime
    copy_device_runtime(str(tmp_path))  # what a bundle carries, with no package installed beside it
    code = ("import sys, edge_trash.edge_runtime.__main__ as m; print(m.__file__); "
            "sys.argv = ['edge-trash-device', 'run', '--bundle', '.', '--max-frames', '0']; sys.exit(m.main())")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.path.insert(0, ''); " + code],
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=60, env=env)
    assert proc.stdout.splitlines()[0] == str(tmp_path / "edge_trash" / "edge_runtime" / "__main__.py")
    assert proc.returncode == 2 and "--max-frames must be >= 1, got 0" in proc.stderr


NO_TF = """
import json, sys, runtime_fixtures
code = runtime_fixtures.run_fake_service(sys.argv[1:])
print("HEAVY=" + json.dumps(sorted(m for m in ("tensorflow", "tf_keras", "keras", "click") if m in sys.modules)))
sys.exit(code)
"""


def test_fast_full_run_imports_neither_tensorflow_nor_click(tmp_path):
    from runtime_fixtures import make_bundle, write_conveyor_frames
    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={
        "health": {"port": 0}, "log": {"path": str(tmp_path / "ev.sqlite")},
        "hard_examples": {"dir": str(tmp_path / "hard")}})
    write_conveyor_frames(str(tmp_path / "frames"), 50)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, TESTS]))
    proc = subprocess.run([sys.executable, "-c", NO_TF, "run", "--bundle", bundle, "--source",
                           "dir:%s" % (tmp_path / "frames")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "HEAVY=[]" in proc.stdout


def test_install_check_refuses_a_kept_sort_yaml_that_does_not_fit_the_new_model(tmp_path, capsys):
    import json

    from edge_trash.edge_runtime.install_check import check_install, main
    from runtime_fixtures import make_bundle

    bundle = make_bundle(str(tmp_path / "bundle"))  # classes bottle, can, carton
    kept = tmp_path / "etc-sort.yaml"
    kept.write_text(json.dumps({"classes": {"bottle": "bottle", "cup": "reject"}}))  # cup: the last model's class
    assert check_install(bundle) is None and main([bundle]) == 0
    problem = check_install(bundle, str(kept))
    assert problem.startswith("%s (kept from the last install) cannot be used with this bundle: " % kept)
    assert "classes.cup: not a class of this model" in problem
    assert problem.endswith("edit it (the bundle's own sort.yaml is the template for this model and this version), "
                            "then run install.sh again; the running service is unchanged")
    assert main([bundle, str(kept)]) == 1 and capsys.readouterr().err == "install.sh: %s\n" % problem
    kept.write_text(json.dumps({"classes": {"bottle": "bottle", "can": "can"}}))
    assert check_install(bundle, str(kept)) is None
    with open(os.path.join(bundle, "labels.txt"), "a") as f:
        f.write("cup\n")
    assert "labels.txt does not match the manifest" in check_install(bundle, str(kept))
    assert main([]) == 2


def test_device_check_says_whether_the_service_would_start_on_an_edited_sort_yaml(tmp_path, capsys, monkeypatch):
    """A bad edit of /etc/edge-trash/sort.yaml showed only at the next restart (a power cut, or a SIGHUP sent to
    reload it), which then stopped the sorter (exit 78); `check` finds it first, in the service's own words."""
    import json

    from edge_trash.edge_runtime import install_check
    from edge_trash.edge_runtime.__main__ import main
    from runtime_fixtures import make_bundle

    monkeypatch.setattr(install_check, "missing_packages", lambda actuator_type, installed=None: [])  # no cv2 here
    bundle = make_bundle(str(tmp_path / "bundle"))  # classes bottle, can, carton
    edited = tmp_path / "sort.yaml"
    edited.write_text(json.dumps({"classes": {"bottle": "bottle", "cup": "reject"}}))
    assert main(["check", "--bundle", bundle, "--config", str(edited)]) == 1
    err = capsys.readouterr().err
    assert main(["run", "--bundle", bundle, "--config", str(edited), "--no-health"]) == EXIT_CONFIG
    said_at_start = capsys.readouterr().err.splitlines()[0]  # what the service would say, stopping
    assert err == ("%s; the service would not start with it (exit 78), and keeps running as it was until it "
                   "restarts: fix it, then check again\n" % said_at_start)
    assert "classes.cup: not a class of this model" in err
    # without --config it reads the unit's sort.yaml (/etc/edge-trash/sort.yaml), not the bundle's template
    from edge_trash.edge_runtime import __main__ as device_cli

    monkeypatch.setattr(device_cli, "UNIT_CONFIG", str(edited))
    assert main(["check", "--bundle", bundle]) == 1 and "classes.cup: not a class" in capsys.readouterr().err
    monkeypatch.setattr(device_cli, "UNIT_CONFIG", str(tmp_path / "no-such-sort.yaml"))
    assert main(["check", "--bundle", bundle]) == 0  # none installed: the bundle's own
    assert "sort.yaml fits" in capsys.readouterr().out
    edited.write_text(json.dumps({"classes": {"bottle": "bottle", "can": "can"}}))
    assert main(["check", "--bundle", bundle, "--config", str(edited)]) == 0
    assert capsys.readouterr().out == ("edge-trash-device: %s fits %s; the service reads it when it starts: sudo "
                                       "systemctl restart edge-trash (run by hand: restart it)\n" % (edited, bundle))
    monkeypatch.undo()
    assert install_check.check_edit(bundle, str(edited), installed=lambda module: module != "cv2") == (
        "the service needs this package: install `sudo apt-get install python3-opencv` (cv2), then check again (a "
        "restart would not bring it)")


def test_install_check_names_the_packages_the_unit_needs_and_the_board_lacks(tmp_path):
    """The unit reads camera:0 through OpenCV and drives the configured actuator's package: missing at start,
    they exit the service with 78; install.sh says so before it touches the running service."""
    import json

    from edge_trash.edge_runtime.install_check import check_install
    from runtime_fixtures import make_bundle

    bundle = make_bundle(str(tmp_path / "bundle"))  # a simulated actuator
    assert check_install(bundle, installed=lambda module: module != "periphery") is None
    assert check_install(bundle, installed=lambda module: module != "cv2") == (
        "the service needs this package: install `sudo apt-get install python3-opencv` (cv2), then run install.sh "
        "again (a restart would not bring it); the running service is unchanged")
    with open(os.path.join(bundle, "sort.yaml")) as f:
        config = json.load(f)
    bins = sorted(set(config["classes"].values()) | {config.get("reject_bin", "reject")})
    config["actuator"] = {"type": "gpio", "gpio": {name: {"chip": "/dev/gpiochip2", "line": 13 + k}
                                                   for k, name in enumerate(bins)}}
    kept = tmp_path / "etc-sort.yaml"
    kept.write_text(json.dumps(config))
    assert check_install(bundle, str(kept), installed=lambda module: False) == (
        "the service needs these packages: install `sudo apt-get install python3-opencv` (cv2) and `sudo pip3 "
        "install python-periphery` (periphery), then run install.sh again (a restart would not bring them); the "
        "running service is unchanged")


def test_install_sh_makes_every_group_the_unit_asks_for_and_keeps_sort_yaml_from_other_users():
    """A SupplementaryGroups entry the board lacks stops the unit from starting (216/GROUP); apex is the Dev
    Board's Edge TPU. sort.yaml may hold health.token: readable by the service's group only."""
    import re

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(os.path.join(RUNTIME, "edge-trash.service"))
    groups = unit["Service"]["SupplementaryGroups"].split()
    with open(os.path.join(RUNTIME, "install.sh")) as f:
        script = f.read()
    made = re.search(r"^for group in ([a-z ]+); do", script, re.M).group(1).split()
    assert "apex" in groups and sorted(groups) == sorted(made)
    assert "chmod 640 /etc/edge-trash/sort.yaml" in script and "a+r /etc/edge-trash/sort.yaml" not in script
