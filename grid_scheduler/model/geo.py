"""Great-circle distance and the speed-of-light floor on fibre latency."""

from __future__ import annotations

import math

EARTH_RADIUS_KM = 6371.0
# Light in glass travels at roughly c / 1.47, i.e. ~204 km per millisecond; 200 is the
# conventional round figure and errs on the side of a slightly higher floor.
FIBRE_KM_PER_MS = 200.0


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance between two points in kilometres."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlmb = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def light_floor_ms(distance_km: float) -> float:
    """One-way latency no fibre path can beat over this great-circle distance."""
    return distance_km / FIBRE_KM_PER_MS
