"""Helpers shared by kctl's commands: output, JSON shapes, pulling with progress."""

from __future__ import annotations

import json
import os
import sys

from kettle.api import kettle_pb as pb

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def out(text: str) -> None:
    sys.stdout.write(text + "\n")


def container_json(c: pb.Container) -> dict[str, Any]:
    health = c.health
    return {
        "id": c.id,
        "name": c.name,
        "image": c.image,
        "status": c.status,
        "exit_code": c.exit_code,
        "created_ns": c.created_ns,
        "started_ns": c.started_ns,
        "finished_ns": c.finished_ns,
        "pid": c.pid,
        "command": list(c.command),
        "labels": dict(c.labels),
        "auto_remove": c.auto_remove,
        "tty": c.tty,
        "open_stdin": c.open_stdin,
        "restart_policy": {
            "name": c.restart.name if c.restart else "no",
            "max_retries": c.restart.max_retries if c.restart else 0,
        },
        "restart_count": c.restart_count,
        "last_exit_reason": c.last_exit_reason,
        "next_restart_ns": c.next_restart_ns,
        "oom_killed": c.oom_killed,
        "stopped_by_user": c.stopped_by_user,
        "group": c.group,
        "health": None
        if health is None or not health.status
        else {
            "status": health.status,
            "failing_streak": health.failing_streak,
            "log": [
                {
                    "start_ns": r.start_ns,
                    "end_ns": r.end_ns,
                    "exit_code": r.exit_code,
                    "output": r.output,
                }
                for r in health.log
            ],
        },
        **({"config": json.loads(c.config_json)} if c.config_json else {}),
        **({"spec": json.loads(c.spec_json)} if c.spec_json else {}),
    }


def image_json(i: pb.Image) -> dict[str, Any]:
    return {
        "name": i.name,
        "digest": i.digest,
        "config": i.config,
        "size": i.size,
        "created_ns": i.created_ns,
        "platform": i.platform,
    }


def env_from_host(items: list[str]) -> list[str]:
    """`-e NAME` takes NAME from kctl's environment, as Docker does (unset: dropped)."""
    result = []
    for item in items:
        if "=" not in item:
            if item not in os.environ:
                continue
            item = f"{item}={os.environ[item]}"
        result.append(item)
    return result
