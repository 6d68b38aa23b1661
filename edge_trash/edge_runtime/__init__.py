"""The sort service that runs on the Coral Dev Board (Python 3.7, stdlib + numpy only).

One frame's path, module by module (each pure-Python/numpy module takes its collaborators as
arguments, so tests and benchmarks inject fakes):

``sources``       camera (OpenCV / GStreamer), image directory or video -> ``Frame`` with a sequence
                  number, read in a thread into a bounded queue (live sources drop the OLDEST frame
                  when inference falls behind, and report every drop).
``decode``        frame -> uint8 model input (stretch or letterbox); the 4 TFLite_Detection_PostProcess
                  outputs read BY SIGNATURE NAME output_0..3 (pycoral's fallback orders otherwise) ->
                  ``Detection`` objects in frame pixels (``geometry.BBox``).
``interpreter``   the only module importing pycoral / tflite_runtime / ai_edge_litert and libedgetpu:
                  Edge TPU model with the delegate, else the CPU int8 model with a loud warning.
``tracker``       IoU tracker with constant-velocity prediction; score-weighted class vote per track;
                  one decision per item when its centre crosses the trigger line (conveyor) or after
                  K stable frames (platform). Tracks that end undecided are reported with a reason.
``policy``        vote -> bin (class map, min confidence -> reject bin, unmapped -> reject bin).
``sort_config``   sort.yaml (PyYAML if present, else JSON syntax; the exported template is both),
                  validation naming the key, ``default_sort_config(class_names)``.
``actuators``     GPIO pulse / PWM servo / serial / simulated, and the scheduler that fires at
                  crossing time + travel delay with retries, then the fail-safe bin and a fault.
``eventlog``      SQLite (WAL): every frame's fate, every decision and actuation, every fault;
                  survives SIGKILL without repeating an actuation; size-bounded.
``hard_examples`` uncertain / disagreeing frames + detections under a disk quota
                  (``edge-trash queue export`` on the host turns them into COCO for relabeling).
``health``        JSON status over HTTP (127.0.0.1 by default) and systemd sd_notify/watchdog.
``manifest``      bundle manifest: sha256 of every file, input shape/type, classes; verification.
``service``       wires the above; ``__main__`` is the ``edge-trash-device run`` command line.

Install on the board with ``install.sh`` (systemd unit ``edge-trash.service``).
"""
