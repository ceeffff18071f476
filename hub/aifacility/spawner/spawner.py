"""FacilitySpawner: KubeSpawner plus the facility's profiles, storage, live availability and spawn-time quotas.

The class is thin on purpose (like Rubin's Nublado): the decisions live in small modules (`profiles`, `storage`,
`availability`, `quotas`, `queueing`, `resume`, `readiness`) that are unit tested without a hub; here they are
wired into KubeSpawner's hooks: `profile_list` (a per-user callable), the form template, `_start` (validate,
reserve, mount, create or take over a lost spawn's pod, wait for the server), `poll` (a queued session a hub
restart left behind) and `stop` (release).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import aiohttp
import jinja2
from kubernetes_asyncio.client.rest import ApiException
from kubespawner import KubeSpawner
from tornado import web
from traitlets import Any as AnyTrait
from traitlets import Bool, Float, Integer, Unicode, default

from aifacility.events.reservation import EventsInForce
from aifacility.events.store import EventStore
from aifacility.facility import Facility, load_facility
from aifacility.kueue.render import local_queue
from aifacility.quotas.budgets import BudgetBook
from aifacility.quotas.policy import PolicyLimits
from aifacility.quotas.reservations import (
    Claim,
    FacilityLimits,
    LimitsSource,
    QuotaExceeded,
    QuotaStore,
    headroom,
    quota_store,
)
from aifacility.quotas.store import policy_store
from aifacility.spawner import profiles, queueing, storage
from aifacility.spawner.availability import Availability, AvailabilityCache, fetch_from_api
from aifacility.spawner.options import MAX_BODY_BYTES, OptionsRefused, options_from_form_fields
from aifacility.spawner.readiness import wait_until_answers
from aifacility.spawner.resume import OPTIONS_DIGEST, adoptable_token, options_digest
from aifacility.spawner.tokens import ServerTokenMixin

TEMPLATES = str(Path(__file__).parent / "templates")


@lru_cache(maxsize=8)
def _facility(path: str) -> Facility:
    # One parse per file per hub process; the facility file does not change under a running hub.
    return load_facility(path or None)


@lru_cache(maxsize=8)
def _form_template(paths: tuple[str, ...], source: str) -> jinja2.Template:
    # KubeSpawner builds a new jinja Environment, and so compiles the form anew, on every render of the spawn
    # page: a fifth of the hub's event-loop time per login (py-spy, 60 logins). Compiled once per process here.
    env = jinja2.Environment(loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(list(paths)),
                                                         jinja2.PackageLoader("kubespawner", "templates")]))
    env.policies["json.dumps_kwargs"] = {"sort_keys": False}  # profiles show in the facility file's order
    return env.from_string(source) if source else env.get_template("form.html")


# One availability cache per (facility file, namespace-independent) hub process, shared by every spawner.
_AVAILABILITY: dict[str, AvailabilityCache] = {}
# The events of each admin database, re-read at most every few seconds (every form and spawn asks).
_EVENTS: dict[str, EventsInForce] = {}


def _events_in_force(policy_db: str) -> EventsInForce:
    view = _EVENTS.get(policy_db)
    if view is None:
        view = _EVENTS[policy_db] = EventsInForce(EventStore(policy_store(policy_db).engine))
    return view


async def facility_profile_list(spawner: FacilitySpawner) -> list[dict[str, Any]]:
    """KubeSpawner's `profile_list` callable: the profiles this spawner's user may use, with the free units of
    their accelerators and what the user's quotas still allow."""
    groups = spawner.user_groups()
    rows = await asyncio.to_thread(spawner.quotas.reservations)
    limits, user = await spawner.limits(), spawner.user.name
    # This server's own reservation (a restart of it) does not count against what it may choose now.
    rows = [r for r in rows if (r.user, r.server) != (user, spawner.name or "")]

    def quota_left(profile: profiles.Profile) -> int | None:
        assert profile.accelerator is not None
        return headroom(user, profiles.payers(profile, groups), profile.accelerator.name, limits, rows)

    return profiles.render_profile_list(spawner.facility, groups, await spawner.availability(), quota_left)


def _options_applied_in_start(spawner: Any, user_options: dict[str, Any]) -> None:
    """`apply_user_options`: nothing to do before start (see FacilitySpawner._start)."""


GROUP_LABEL = "aifacility.io/group"


class FacilitySpawner(ServerTokenMixin, KubeSpawner):
    reservation = None  # the quotas.Reservation of the current spawn
    _refused = False  # the current spawn was refused (profile or quota) before anything was created
    _queue: str | None = None  # the LocalQueue of the current spawn, when it waits in Kueue
    _base_start_timeout: int | None = None
    _queue_decided: asyncio.Event | None = None  # set once _start knows whether the pod goes through Kueue
    _resuming = False  # this spawn resumes one the hub lost in a restart (see keeper.py)
    _lost_in_queue = False  # found queued after a hub restart: its pod and reservation wait for the keeper
    _keeping_token = False  # the stop under way is of a lost queued spawn: its pod keeps its API token
    facility_path = Unicode(
        "", config=True,
        help="The facility file (default: $AIFACILITY_FACILITY, else the shipped demo facility).")
    quota_db = Unicode(
        "aifacility-quotas.sqlite", config=True,
        help="The sqlite file of the quota reservations (relative paths: the hub's working directory).")
    policy_db = Unicode(
        "", config=True,
        help="""The database of the admin service's policies (a SQLAlchemy URL): every spawn reads the limits in
        force from it, so a change applies to the next spawn without a restart. Empty: the facility file's
        `quotas:` only.""")
    limits_source = AnyTrait(
        None, allow_none=True, config=True,
        help="""A callable(spawner) -> LimitsSource giving the quota limits, instead of the facility file and
        `policy_db` (tests, other sources).""")
    kueue_accelerator_sessions = Bool(
        True, config=True,
        help="""Send every accelerator session of a group with a Kueue queue through that queue, not only the
        queued ones. Kueue can only count what it admits: if direct sessions bypassed it, it would admit a queued
        session onto units that direct sessions already hold. A direct session passed the hub's quota check
        (the same per-group figures as the group's ClusterQueue), so Kueue admits it at once.""")
    queued_start_timeout = Integer(
        30 * 24 * 3600, config=True,
        help="""How long a queued session may wait for Kueue's admission (seconds). Queued sessions have no
        start timeout in practice; once admitted, the normal `start_timeout` applies to the pod's start.""")
    queue_poll_interval = Float(2.0, config=True, help="Seconds between queue-position updates on the progress page.")
    server_poll_interval = Float(
        0.1, config=True,
        help="""Seconds between the checks, at the end of a start, of whether the notebook server answers yet
        (see _server_answers): short, so that a started server is used at once.""")
    availability_ttl = Float(
        5.0, config=True, help="Seconds the free-units-per-accelerator figures shown on the form are cached.")

    @property
    def base_facility(self) -> Facility:
        return _facility(self.facility_path or os.environ.get("AIFACILITY_FACILITY", ""))

    @property
    def facility(self) -> Facility:
        """The facility as it stands now: the file, with the events that are on (their reservations in the events
        queue, their profiles on the form) when the admin database is known."""
        base = self.base_facility
        if not self.policy_db or base.events.queue is None:
            return base
        return _events_in_force(self.policy_db).overlay(base, datetime.now(UTC))

    @default("profile_list")
    def _default_profile_list(self) -> Any:
        return facility_profile_list

    @default("apply_user_options")
    def _default_apply_user_options(self) -> Any:
        # KubeSpawner applies the profile choice itself (load_user_options, in start), after our validation;
        # a hook that takes the options keeps JupyterHub from logging them as unhandled on every spawn.
        return _options_applied_in_start

    @default("options_from_form")
    def _default_options_from_form(self) -> Any:
        return self.checked_options_from_form

    def checked_options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, Any]:
        """`options_from_form`: KubeSpawner's reading of the form (profile, image, queue checkbox), checked like a
        REST body (options.py) and against this user's profiles before JupyterHub stores anything; a 400 that
        says what is wrong otherwise."""
        try:
            size = sum(len(k) + sum(len(v) for v in values) for k, values in formdata.items())
            if size > MAX_BODY_BYTES:
                raise OptionsRefused(f"The submitted form is {size} characters long; at most {MAX_BODY_BYTES} "
                                     "are accepted. Choose a profile from the form and submit it again.", status=413)
            options = options_from_form_fields(self._options_from_form(formdata))
        except OptionsRefused as e:
            raise web.HTTPError(e.status, "%s", str(e)) from None
        self.check_choice_before_spawn(options)
        return options

    def _render_options_form(self, profile_list: list[dict[str, Any]]) -> str:
        """KubeSpawner's rendering of the profile form, with the template compiled once (see _form_template)."""
        profile_list = self._get_initialized_profile_list(profile_list)
        user_options = self.user_options or {}
        if user_options:
            try:
                self._validate_user_options(profile_list)
            except ValueError as e:  # stale (the profiles changed) or set through the API: preselect nothing
                self.log.warning("Not preselecting the saved options on the spawn form: %s", e)
                user_options = {}
        template = _form_template(tuple(self.additional_profile_form_template_paths), self.profile_form_template)
        return template.render(profile_list=profile_list, user_options=user_options)

    @default("additional_profile_form_template_paths")
    def _default_form_paths(self) -> list[str]:
        return [TEMPLATES]

    def user_groups(self) -> list[str]:
        """The hub groups of this spawner's user (IAM groups, synced at login by the authenticator), and the
        events queue while the user takes part in an event that is on (the event's profile is charged to it)."""
        groups = sorted(g.name for g in getattr(self.user, "groups", []) or [])
        base = self.base_facility
        if self.policy_db and base.events.queue is not None:
            groups += _events_in_force(self.policy_db).queue_groups(base, self.user.name, groups, datetime.now(UTC))
        return groups

    async def availability(self) -> Availability:
        """Free/total units per accelerator; empty when the cluster cannot be read (the form still works)."""
        key = self.facility_path or os.environ.get("AIFACILITY_FACILITY", "")
        cache = _AVAILABILITY.get(key)
        if cache is None or cache.ttl != self.availability_ttl:
            cache = _AVAILABILITY[key] = AvailabilityCache(self.facility, self.availability_ttl)
        try:
            return await cache.get(lambda: fetch_from_api(self.api))
        except (ApiException, aiohttp.ClientError, OSError, TimeoutError) as e:
            self.log.warning("Cannot read accelerator availability from the Kubernetes API: %s", e)
            return {}

    def chosen_profile(self) -> profiles.Profile:
        """The profile of this spawn, validated for this user; a 400 with the reason otherwise."""
        return self.check_choice_before_spawn(self.user_options or {})

    def check_choice_before_spawn(self, options: dict[str, Any]) -> profiles.Profile:
        """The profile `options` choose, if this user may use it; a 400 with the reason otherwise. The spawn API
        (api.py) and the form call it before JupyterHub stores the options, and start() again."""
        try:
            return profiles.check_choice(self.facility, self.user.name, self.user_groups(), options)
        except profiles.ProfileChoiceError as e:
            raise web.HTTPError(400, "%s", str(e)) from None

    async def limits(self) -> LimitsSource:
        """The limits in force now: the facility file's, with the admin service's policies over them."""
        if self.limits_source is not None:
            source: LimitsSource = self.limits_source(self)
            return source
        if self.policy_db:
            policies = await asyncio.to_thread(policy_store(self.policy_db).snapshot)
            return PolicyLimits(self.facility, policies)
        return FacilityLimits(self.facility)

    @property
    def quotas(self) -> QuotaStore:
        return quota_store(self.quota_db)

    def claim(self, profile: profiles.Profile) -> Claim:
        """What this spawn asks of the quotas, and which of the user's groups may pay (see quotas.py)."""
        mine = set(self.user_groups())
        payers = profiles.payers(profile, mine)
        queued = profiles.wants_queue(self.user_options or {}) and profile.queueable
        if queued:
            # A queued session is charged to a group that has a Kueue queue (its LocalQueue admits it).
            queues = self.facility.queues
            payers = [g for g in payers if queues.enabled and g in queues.groups]
            if not payers:
                raise web.HTTPError(400, f"None of your groups ({', '.join(sorted(mine)) or 'none'}) has a queue "
                                         f"for the profile '{profile.name}'; untick 'queue' to start it directly.")
        acc = profile.accelerator
        return Claim(user=self.user.name, server=self.name or "", groups=tuple(payers),
                     accelerator=acc.name if acc else None, units=acc.count if acc else 0,
                     queued=queued, queueable=profile.queueable)

    async def within_budgets(self, claim: Claim) -> Claim:
        """An accelerator spawn under a used-up budget (admin service): the user's own refuses it, a group's
        leaves that group out of those that may pay (a 403 with the reason when none is left)."""
        if not claim.accelerator or not self.policy_db:
            return claim
        book = BudgetBook(policy_store(self.policy_db).engine)
        used_up = await asyncio.to_thread(book.exhausted, self.user.name, self.user_groups())
        for state in used_up:
            if state.scope == "user":
                raise web.HTTPError(403, "%s", state.refusal("accelerator sessions"))
        closed = {s.name: s for s in used_up}
        payers = tuple(g for g in claim.groups if g not in closed)
        if claim.groups and not payers:
            raise web.HTTPError(403, "%s", closed[claim.groups[0]].refusal("accelerator sessions"))
        return dataclasses.replace(claim, groups=payers)

    async def reserve(self, profile: profiles.Profile) -> None:
        """Check the quotas and hold what this spawn needs; a 403 that names the limit otherwise."""
        facility = self.facility

        def label(name: str) -> str:
            return facility.accelerator(name).display_name

        claim = await self.within_budgets(self.claim(profile))
        try:
            self.reservation = await self.quotas.reserve(claim, await self.limits(), label)
        except QuotaExceeded as e:
            raise web.HTTPError(403, str(e)) from None
        group = self.reservation.group
        through_kueue = claim.queued or (self.kueue_accelerator_sessions and claim.accelerator is not None)
        self._queue = None
        if group and through_kueue and facility.queues.enabled and group in facility.queues.groups:
            self._queue = local_queue(facility, group)["metadata"]["name"]

    async def release(self) -> None:
        await self.quotas.release(self.user.name, self.name or "")

    async def _prepare_storage(self) -> None:
        groups = self.user_groups()
        # The home claim is KubeSpawner's (storage_pvc_ensure); the shared ones are ours.
        await storage.Claims(self.api, self.namespace, self.facility, self.log).ensure_shared(groups)
        volumes, mounts = storage.pod_volumes(self.facility, self.pvc_name, groups)
        self.volumes = volumes
        self.volume_mounts = mounts

    def start(self) -> Any:
        # JupyterHub bounds the whole start() by `start_timeout`, read right after this returns: a queued
        # session gets the queue's bound instead, and _start_queued applies the normal one after admission.
        if self._base_start_timeout is None:
            self._base_start_timeout = int(self.start_timeout)  # type: ignore[has-type]
        queued = profiles.wants_queue(self.user_options or {})
        self.start_timeout = self.queued_start_timeout if queued else self._base_start_timeout
        self._queue_decided = asyncio.Event()
        return super().start()

    async def _start(self) -> Any:
        self._refused = self._lost_in_queue = False
        self._queue = None
        # Every stop releases what the server held: a reservation still there means the hub lost the previous
        # spawn of this server (it restarted while the spawn was pending), and its pod may still wait in Kueue.
        self._resuming = await asyncio.to_thread(self.quotas.held, self.user.name, self.name or "") is not None
        try:
            profile = self.chosen_profile()
            await self.reserve(profile)
        except web.HTTPError:
            # Refused before anything was created: stop() and poll() must not go looking for a pod; but the
            # pod of a lost spawn that may not resume (the user left the group, a quota shrank) must go.
            self._refused = True
            if self._resuming:
                await self._remove_lost_pod()
            raise
        finally:
            if self._queue_decided is not None:
                self._queue_decided.set()
        try:
            await self._prepare_storage()
            url = await (self._start_queued() if self._queue else super()._start())
            await self._server_answers(url)
            return url
        except Exception:
            # Failed: the units go back at once. JupyterHub also stops the server afterwards, which releases
            # again, harmlessly. Not on cancellation: that is the hub shutting down (a start timeout does not
            # cancel, and its stop releases), and the reservation is what lets the spawn keeper resume the
            # spawn once the hub is back.
            await asyncio.shield(self.release())
            raise

    async def _make_create_pod_request(self, pod: Any, request_timeout: int) -> bool:
        # KubeSpawner deletes a pod that is in the way and creates a new one; a resumed spawn takes over the
        # pod of the spawn it resumes instead, which keeps that pod's Workload and its place in the queue.
        if self._resuming and await self._adopt_lost_pod():
            return True
        created: bool = await super()._make_create_pod_request(pod, request_timeout)
        return created

    async def _adopt_lost_pod(self) -> bool:
        """Take over the pod of the lost spawn if it is still alive and was made from the same options."""
        try:
            found = await self.api.read_namespaced_pod(self.pod_name, self.namespace,
                                                       _request_timeout=self.k8s_api_request_timeout)
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        pod = self.api.api_client.sanitize_for_serialization(found)
        token = adoptable_token(pod, self.user_options)
        if token is None:
            return False
        self.api_token = token  # see resume.py: JupyterHub keeps a re-used token
        self.log.info("Resuming the lost spawn of %s: taking over pod %s (%s)", self._log_name, self.pod_name,
                      "still queued" if queueing.is_gated(pod) else (pod.get("status") or {}).get("phase"))
        return True

    async def _remove_lost_pod(self) -> None:
        try:
            await self.api.delete_namespaced_pod(self.pod_name, self.namespace, grace_period_seconds=0,
                                                 _request_timeout=self.k8s_api_request_timeout)
            self.log.info("Removed pod %s of a lost spawn that may not resume", self.pod_name)
        except ApiException as e:
            if e.status != 404:
                self.log.warning("Could not remove pod %s of a lost spawn: %s", self.pod_name, e.reason)
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            self.log.warning("Could not remove pod %s of a lost spawn: %s", self.pod_name, e)

    async def _server_answers(self, url: str) -> None:
        """Return once the notebook server answers (see readiness.py), or after `http_timeout`, leaving the
        verdict to the hub's own check."""
        if self.internal_ssl or not url.startswith("http://"):
            return  # TLS to the server needs the hub's client certificates: JupyterHub's own check does that
        base = self.server.base_url if self.server is not None else "/"
        await wait_until_answers(url.rstrip("/") + base, float(self.http_timeout), self.server_poll_interval)

    def _pod(self) -> dict[str, Any] | None:
        reflector = self.pod_reflector
        return reflector.pods.get(f"{self.namespace}/{self.pod_name}") if reflector else None

    async def _start_queued(self) -> Any:
        """KubeSpawner's start, unbounded while Kueue holds the pod, bounded by start_timeout after that."""
        inner = asyncio.ensure_future(super()._start())
        try:
            while not inner.done():
                pod = self._pod()
                if pod is not None and not queueing.is_gated(pod):
                    break
                await asyncio.wait([inner], timeout=1)
            if inner.done():  # admitted and running between two looks, or failed
                result = inner.result()
                await self._admitted()
                return result
            await self._admitted()
            timeout = self._base_start_timeout or 300
            done, _ = await asyncio.wait([inner], timeout=timeout)
            if not done:
                raise TimeoutError(f"pod {self.pod_name} was admitted from the queue but did not start "
                                   f"in {timeout} seconds")
            return inner.result()
        finally:
            if not inner.done():
                inner.cancel()

    async def _admitted(self) -> None:
        self.log.info("Kueue admitted %s from queue %s", self._log_name, self._queue)
        if self.reservation is not None and self.reservation.queued:
            # From now on its units are in use: the hub counts them like a direct session's.
            await self.quotas.admitted(self.user.name, self.name or "")

    async def get_pod_manifest(self) -> Any:
        pod = await super().get_pod_manifest()
        if self._queue:
            pod.metadata.labels[queueing.QUEUE_LABEL] = self._queue
        if self.reservation is not None and self.reservation.group:
            # The group this session is charged to, frozen on the pod for accounting (see accounting/pods.py).
            pod.metadata.labels[GROUP_LABEL] = self.reservation.group
        pod.metadata.annotations = {**(pod.metadata.annotations or {}),
                                    OPTIONS_DIGEST: options_digest(self.user_options)}
        return pod

    async def progress(self) -> Any:
        """KubeSpawner's progress (pod events), preceded while Kueue holds the pod by its queue position and
        what it waits for."""
        async for event in self._queue_progress():
            yield event
        async for event in super().progress():
            yield event

    async def _queue_progress(self) -> Any:
        decided, future = self._queue_decided, self._start_future
        if decided is None:
            return
        while not decided.is_set():  # _start has not reserved yet (progress can be asked for first)
            if future is not None and future.done():
                return
            await asyncio.sleep(0.1)
        if not self._queue:
            return
        last = None
        while True:
            # Admission first: the server may be up before this loop wakes again, and the user should still
            # be told that the queue let them in.
            pod = self._pod()
            if pod is not None and not queueing.is_gated(pod):
                if last is not None:
                    yield {"progress": 20, "message": f"Admitted from the '{self._queue}' queue; starting."}
                return
            if future is not None and future.done():
                return
            if pod is not None:
                try:
                    message = await queueing.queue_status(
                        self.api.api_client, self.namespace, self._queue, pod, self._queued_what(),
                        unbounded=bool(self.reservation and self.reservation.queued))
                except (ApiException, aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
                    message = f"Queued in the '{self._queue}' queue (position unavailable: {e})."
                if message != last:
                    last = message
                    yield {"progress": 10, "message": message}
            await asyncio.sleep(self.queue_poll_interval)

    def _queued_what(self) -> str:
        res = self.reservation
        if res is None or not res.accelerator:
            return "its resources"
        return f"{res.units} x {self.facility.accelerator(res.accelerator).display_name}"

    async def poll(self) -> int | None:
        if self._refused or self._lost_in_queue:
            return 0
        status: int | None = await super().poll()
        pod = self._pod()
        if status is None and pod is not None and queueing.is_gated(pod) and self._start_future is None:
            # Kueue still holds the pod, yet no spawn of this hub process waits for it: the hub restarted while
            # the session was queued. KubeSpawner counts a pending pod as running, so the hub would wait for a
            # server that cannot answer and then delete the pod. Reported stopped instead, with the pod and the
            # reservation left alone (see stop and run_post_stop_hook), the spawn keeper resumes the spawn and
            # the pod keeps its place in the queue.
            self.log.info("%s was queued when the hub stopped; leaving its pod %s in the queue for the spawn "
                          "keeper to resume", self._log_name, self.pod_name)
            self._lost_in_queue = True
            return 0
        return status

    async def stop(self, now: bool = False) -> None:
        if self._refused or self._lost_in_queue:
            return
        await super().stop(now)

    def run_post_stop_hook(self) -> Any:
        """Release the quota reservation whenever the hub considers the server stopped.

        JupyterHub calls this after every stop, including when poll() found the pod already gone (then it
        skips stop()), so it is the one place that sees every end of a server.
        """
        async def after_stop() -> None:
            self._keeping_token = self._lost_in_queue
            if self._lost_in_queue:
                self._lost_in_queue = False  # the reservation stays: it is what the spawn keeper resumes
            else:
                await self.release()
            try:
                result = super(FacilitySpawner, self).run_post_stop_hook()
            finally:
                self._keeping_token = False
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                try:
                    await result
                except Exception:
                    self.log.exception("post_stop_hook failed for %s", self._log_name)

        return after_stop()

    def keeps_server_token(self) -> bool:
        # A lost queued spawn's pod waits in the queue with its token; the resumed spawn takes both over.
        return self._keeping_token
