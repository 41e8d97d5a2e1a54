"""Deployment files for platforms that run artifacts: ``duh export kserve``.

An exporter reads artifacts (their manifests) and writes what the platform applies; it never
imports the compiler.
"""

from __future__ import annotations

from duh.export.kserve import KServeExport, KServeRequest, export_kserve

__all__ = ["KServeExport", "KServeRequest", "export_kserve"]
