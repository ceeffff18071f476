"""The facility description (`facility.yaml`): model, loader and quantities."""

from aifacility.facility.loader import FacilityError, demo_facility_path, load_facility
from aifacility.facility.model import Facility

__all__ = ["Facility", "FacilityError", "demo_facility_path", "load_facility"]
