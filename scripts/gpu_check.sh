#!/usr/bin/env bash
# One prepared run (at most 8 minutes) of duh's NVIDIA targets on a GPU host: see
# scripts/_gpu_check.py. Usage: scripts/gpu_check.sh [OUT.json] (default gpu_check.json).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
OUT="${1:-gpu_check.json}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
exec timeout 480 "$PY" scripts/_gpu_check.py --out "$OUT" --budget-s 450
