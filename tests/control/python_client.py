#!/usr/bin/env python3
"""A TrainingControl client we did not write: Debian's python3-grpcio with stubs that
python3-grpc-tools generated from proto/epochal/v1/control.proto (PYTHONPATH points at
them). Calls GetStatus, reads WatchEvents and lists the services through server reflection
at the job at argv[1]; prints
"status ok", "watch ok" and "reflection ok" on success, exits non-zero otherwise."""
import sys

import grpc

from epochal.v1 import control_pb2, control_pb2_grpc


def main():
    channel = grpc.insecure_channel(sys.argv[1])
    stub = control_pb2_grpc.TrainingControlStub(channel)
    status = stub.GetStatus(control_pb2.GetStatusRequest(), timeout=30)
    assert status.state == control_pb2.RUNNING, status
    assert status.world_size == 2, status
    print("status ok: step %d, lr %g, %d ranks" % (status.step, status.learning_rate,
                                                   status.world_size))
    events = stub.WatchEvents(control_pb2.WatchEventsRequest(), timeout=60)
    kinds = set()
    for event in events:
        kinds.add(event.WhichOneof("kind"))
        if "batch" in kinds and "state" in kinds:
            break
    events.cancel()
    assert kinds >= {"batch", "state"}, kinds
    print("watch ok: " + ", ".join(sorted(kinds)))

    # Server reflection, spoken in raw bytes (Debian ships no reflection stubs): a
    # ServerReflectionRequest with list_services = "" (field 7) must list the service.
    reflect = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=lambda b: b, response_deserializer=lambda b: b)
    reply = next(iter(reflect(iter([b"\x3a\x00"]), timeout=30)))
    assert b"epochal.v1.TrainingControl" in reply, reply
    print("reflection ok")


if __name__ == "__main__":
    main()
