"""FacilitySpawner: KubeSpawner plus the facility's profiles, storage, live availability and spawn-time quotas.

The class is thin on purpose (like Rubin's Nublado): the decisions live in small modules (`profiles`, `storage`,
`availability`, `quotas`, `queueing`) that are unit tested without a hub; here they are wired into KubeSpawner's
hooks: `profile_list` (a per-user callable), the form template, `_start` (validate, reserve, mount, create) and
`stop` (release).
"""

from __future__ import annotations

import asyncio
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from kubernetes_asyncio.client.rest import ApiException
from kubespawner import KubeSpawner
from tornado import web
from traitlets import Any as AnyTrait
from traitlets import Float, Unicode, default

from aifacility.facility import Facility, load_facility
from aifacility.spawner import profiles, storage
from aifacility.spawner.availability import Availability, AvailabilityCache, fetch_from_api
from aifacility.spawner.quotas import Claim, FacilityLimits, LimitsSource, QuotaExceeded, QuotaStore, quota_store

TEMPLATES = str(Path(__file__).parent / "templates")


@lru_cache(maxsize=8)
def _facility(path: str) -> Facility:
    # One parse per file per hub process; the facility file does not change under a running hub.
    return load_facility(path or None)


# One availability cache per (facility file, namespace-independent) hub process, shared by every spawner.
_AVAILABILITY: dict[str, AvailabilityCache] = {}


async def facility_profile_list(spawner: FacilitySpawner) -> list[dict[str, Any]]:
    """KubeSpawner's `profile_list` callable: the profiles this spawner's user may use, with availability."""
    return profiles.render_profile_list(spawner.facility, spawner.user_groups(),
                                        await spawner.availability())


class FacilitySpawner(KubeSpawner):
    reservation = None  # the quotas.Reservation of the current spawn
    _refused = False  # the current spawn was refused (profile or quota) before anything was created
    facility_path = Unicode(
        "", config=True,
        help="The facility file (default: $AIFACILITY_FACILITY, else the shipped demo facility).")
    quota_db = Unicode(
        "aifacility-quotas.sqlite", config=True,
        help="The sqlite file of the quota reservations (relative paths: the hub's working directory).")
    limits_source = AnyTrait(
        None, allow_none=True, config=True,
        help="""A callable(spawner) -> LimitsSource giving the quota limits (default: the facility file's
        `quotas:`). The admin service plugs its editable limits in here.""")
    availability_ttl = Float(
        5.0, config=True, help="Seconds the free-units-per-accelerator figures shown on the form are cached.")

    @property
    def facility(self) -> Facility:
        return _facility(self.facility_path or os.environ.get("AIFACILITY_FACILITY", ""))

    @default("profile_list")
    def _default_profile_list(self) -> Any:
        return facility_profile_list

    @default("additional_profile_form_template_paths")
    def _default_form_paths(self) -> list[str]:
        return [TEMPLATES]

    def user_groups(self) -> list[str]:
        """The hub groups of this spawner's user (IAM groups, synced at login by the authenticator)."""
        return sorted(g.name for g in getattr(self.user, "groups", []) or [])

    async def availability(self) -> Availability:
        """Free/total units per accelerator; empty when the cluster cannot be read (the form still works)."""
        key = self.facility_path or os.environ.get("AIFACILITY_FACILITY", "")
        cache = _AVAILABILITY.get(key)
        if cache is None or cache.ttl != self.availability_ttl:
            cache = _AVAILABILITY[key] = AvailabilityCache(
                self.facility, lambda: fetch_from_api(self.api), self.availability_ttl)
        try:
            return await cache.get()
        except (ApiException, OSError, TimeoutError) as e:
            self.log.warning("Cannot read accelerator availability from the Kubernetes API: %s", e)
            return {}

    def chosen_profile(self) -> profiles.Profile:
        """The profile of this spawn, validated for this user; a 400 with the reason otherwise."""
        try:
            return profiles.check_choice(self.facility, self.user.name, self.user_groups(),
                                         self.user_options or {})
        except profiles.ProfileChoiceError as e:
            raise web.HTTPError(400, str(e)) from None

    def limits(self) -> LimitsSource:
        if self.limits_source is not None:
            return self.limits_source(self)  # type: ignore[no-any-return]
        return FacilityLimits(self.facility)

    @property
    def quotas(self) -> QuotaStore:
        return quota_store(self.quota_db)

    def claim(self, profile: profiles.Profile) -> Claim:
        """What this spawn asks of the quotas, and which of the user's groups may pay (see quotas.py)."""
        mine = set(self.user_groups())
        payers = [g for g in profile.groups if g in mine] if profile.groups else sorted(mine)
        acc = profile.accelerator
        return Claim(user=self.user.name, server=self.name or "", groups=tuple(payers),
                     accelerator=acc.name if acc else None, units=acc.count if acc else 0,
                     queued=profiles.wants_queue(self.user_options or {}) and profile.queueable,
                     queueable=profile.queueable)

    async def reserve(self, profile: profiles.Profile) -> None:
        """Check the quotas and hold what this spawn needs; a 403 that names the limit otherwise."""
        facility = self.facility

        def label(name: str) -> str:
            return facility.accelerator(name).display_name

        try:
            self.reservation = await self.quotas.reserve(self.claim(profile), self.limits(), label)
        except QuotaExceeded as e:
            raise web.HTTPError(403, str(e)) from None

    async def release(self) -> None:
        await self.quotas.release(self.user.name, self.name or "")

    async def _ensure_claim(self, name: str, size: str, kind: str, what: str) -> None:
        """Create a shared ReadWriteMany claim if it does not exist yet (a 409 means someone else did)."""
        try:
            await self.api.read_namespaced_persistent_volume_claim(name=name, namespace=self.namespace)
            return
        except ApiException as e:
            if e.status != 404:
                raise
        body = storage.pvc_manifest(name, self.facility.storage, size, kind, what)
        try:
            await self.api.create_namespaced_persistent_volume_claim(namespace=self.namespace, body=body)
            self.log.info("Created %s claim %s for %s", kind, name, what)
        except ApiException as e:
            if e.status != 409:
                raise

    async def _prepare_storage(self) -> None:
        groups = self.user_groups()
        fs = self.facility.storage
        for name, kind, what in storage.shared_claims(self.facility, groups):
            await self._ensure_claim(name, fs.group_size if kind == "group" else fs.dataset_size, kind, what)
        volumes, mounts = storage.pod_volumes(self.facility, self.pvc_name, groups)
        self.volumes = volumes
        self.volume_mounts = mounts

    async def _start(self) -> Any:
        self._refused = False
        try:
            profile = self.chosen_profile()
            await self.reserve(profile)
        except web.HTTPError:
            # Refused before anything was created: stop() and poll() must not go looking for a pod.
            self._refused = True
            raise
        try:
            await self._prepare_storage()
            return await super()._start()
        except BaseException:
            # Failed or cancelled (start timeout): the units go back at once. JupyterHub also stops the
            # server afterwards, which releases again, harmlessly.
            await asyncio.shield(self.release())
            raise

    async def poll(self) -> int | None:
        if self._refused:
            return 0
        return await super().poll()  # type: ignore[no-any-return]

    async def stop(self, now: bool = False) -> None:
        if self._refused:
            return
        await super().stop(now)

    def run_post_stop_hook(self) -> Any:
        """Release the quota reservation whenever the hub considers the server stopped.

        JupyterHub calls this after every stop, including when poll() found the pod already gone (then it
        skips stop()), so it is the one place that sees every end of a server.
        """
        async def after_stop() -> None:
            await self.release()
            result = super(FacilitySpawner, self).run_post_stop_hook()
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                try:
                    await result
                except Exception:
                    self.log.exception("post_stop_hook failed for %s", self._log_name)

        return after_stop()
