"""The alert module: process_alert work orders, from raw notice bytes to target lists at every telescope."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import grpc
import numpy as np
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from toros.alert import orders
from toros.alert.campaign import Campaigns, DueLook, DueMove, EventSky, Overdue
from toros.alert.coordination import Galaxies, Pointing, plan_first_epoch, pool_size
from toros.alert.listeners import KafkaListener, VoeventListener
from toros.alert.notices import Alert, BadNotice, parse_notice
from toros.alert.outputs import plot_skymap, sky_view, target_record, write_sky_view, write_targets
from toros.alert.publishing import CampaignPublisher
from toros.alert.ranking import Ranked, rank
from toros.alert.relay import Relay
from toros.alert.settings import AlertConfig, Observatory
from toros.alert.skymap import BadSkymap, SkyMap, download, read_skymap
from toros.floor import journal_keys
from toros.floor.catalogs import BadCatalog, GalaxyIndex
from toros.floor.notifications import notify
from toros.floor.requesters import ALERT_RELAY, LISTENER
from toros.generated import toros_pb2 as pb
from toros.runtime.config import ConfigError
from toros.runtime.files import StorageUnavailable, atomic_write, path_inside
from toros.runtime.following import EventFollower
from toros.runtime.journal import JournalUnavailable
from toros.runtime.module import Module, Services, Task
from toros.runtime.states import state_name
from toros.runtime.validation import Checker, InvalidWorkOrder
from toros.runtime.workers import TaskContext, TaskFailed

log = logging.getLogger(__name__)

GALAXIES_SHOWN = 50
LOOK_POLL_S = 1.0  # how often due second looks are looked for (real seconds)
FIRST_TRY_S = 15.0  # a site's telescope that has not taken its list by then is passed over  # the ranked galaxies listed in the sky view, whether chosen for a site or not


@dataclass(frozen=True)
class ListHead:
    """What every target list of an event carries: the event, whether a drill, the merger, who asks."""

    alert_id: str
    drill: bool
    event_time: datetime | None
    requester: str

    @classmethod
    def of(cls, alert: Alert, context: TaskContext[pb.ProcessAlert]) -> ListHead:
        return cls(alert.alert_id, alert.is_test, alert.event_time, f"{ALERT_RELAY}{context.id}")


@dataclass
class SiteRelay:
    """One observatory's share of an alert: its pointings, the work order that carries them, and how it went."""

    observatory: Observatory
    work_order_id: str
    targets: list[Pointing] = field(default_factory=list)
    accepted: bool = False
    note: str = ""


class Stopping(Exception):
    """The daemon stops: a second look being sent is left for the next start."""


class Report:
    """How a notice's handling ends: an alert_processed event saying what happened, then the work order's
    message (or its failure)."""

    def __init__(self, alert: Alert, context: TaskContext[pb.ProcessAlert]) -> None:
        self.alert = alert
        self.context = context
        self.label = f"{'drill ' if alert.is_test else ''}{alert.alert_type} {alert.alert_id}"

    def done(self, message: str, relayed: int = 0) -> str:
        alert = self.alert
        self.context.emit(
            alert_processed=pb.AlertProcessed(
                alert_id=alert.alert_id,
                alert_type=alert.alert_type,
                serial=alert.serial,
                drill=alert.is_test,
                targets_relayed=relayed,
                message=message,
            )
        )
        return message

    def failed(self, message: str, relayed: int = 0) -> NoReturn:
        raise TaskFailed(self.done(message, relayed))


class AlertModule(Module):
    name = "alert"

    def __init__(self, services: Services, settings: AlertConfig) -> None:
        super().__init__(services)
        self.settings = settings
        self.index: GalaxyIndex | None = None
        self.listeners: list[KafkaListener | VoeventListener] = []
        self.followers: list[EventFollower] = []
        self.publisher = (
            CampaignPublisher(settings.campaign_kafka, self._published) if settings.campaign_kafka.enabled else None
        )
        self.campaigns = Campaigns(
            self.storage_root / "campaigns",
            settings.observatories,
            self.publisher.publish if self.publisher is not None else None,
            settings.second_look.delay_s if settings.second_look.enabled else None,
        )
        self._stopping = threading.Event()
        self._cancelling: dict[str, Overdue] = {}  # lists given up at sites that fell behind, not cancelled there yet
        self._looker = threading.Thread(target=self._look_again, name="second-looks", daemon=True)
        self._event_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._orders_lock = threading.Lock()

    def tasks(self) -> dict[str, Task[Any]]:
        return {"process_alert": Task(self.check_process_alert, self.process_alert)}

    def start(self) -> None:
        """Indexes the catalog (once; kept until the catalog changes) before the daemon reports SERVING,
        then starts listening for alerts."""
        if self.settings.catalog is not None:
            try:
                self.index = GalaxyIndex.open(self.settings.catalog)
            except FileNotFoundError:
                raise ConfigError(f"alert.catalog: {self.settings.catalog}: no such catalog file") from None
            except BadCatalog as exc:
                raise ConfigError(f"alert.catalog: {exc}") from None
            except OSError as exc:
                raise ConfigError(f"alert.catalog: {self.settings.catalog}: {exc.strerror or exc}") from None
            log.info("catalog %s: %d galaxies", self.settings.catalog, len(self.index))
        self.followers = self._campaign_followers()
        for follower in self.followers:
            follower.start()
        if self.publisher is not None:
            self.publisher.start()
        self._looker.start()
        if self.settings.kafka.enabled:
            self.listeners.append(KafkaListener(self.settings.kafka, self.receive, report=self.intake_problem))
        if self.settings.voevent.enabled:
            self.listeners.append(VoeventListener(self.settings.voevent, self.receive, self.archive))
        for listener in self.listeners:
            listener.start()

    def stop(self) -> None:
        for listener in self.listeners:
            listener.stop()
        for follower in self.followers:
            follower.stop()
        if self.publisher is not None:
            self.publisher.stop()
        self._stopping.set()
        if self._looker.is_alive():
            self._looker.join(timeout=10)

    def _look_again(self) -> None:
        """The candidates' second looks, sent as they come due (clock time), and the galaxies a site left, sent
        to the others."""
        while not self._stopping.wait(LOOK_POLL_S):
            try:
                for look in self.campaigns.due(self.clock.now()):
                    self._guarded(self._send_look, look, f"second look at {look.candidate} of {look.event}")
                for overdue in self.campaigns.behind(self.clock.now(), self.settings.site_behind_s):
                    log.warning("%s: %s; its list %s cancelled there, its galaxies moved", overdue.event,
                                overdue.reason, overdue.work_order_id)  # fmt: skip
                    self._cancelling[overdue.work_order_id] = overdue
                self._cancel_overdue()
                for move in self.campaigns.due_moves():
                    self._guarded(self._move_away, move, f"galaxies {move.site} left of {move.event}")
            except Stopping:
                return

    def _cancel_overdue(self) -> None:
        """The lists given up at sites that fell behind, cancelled there: tried again each round until the site
        answers (a site that was down must not carry on with galaxies now observed elsewhere)."""
        sites = {o.name: o for o in self.settings.observatories}
        relay = Relay(self.services.connect, 0.0, self._wait_or_stop)
        for order_id, overdue in list(self._cancelling.items()):
            site = sites.get(overdue.site)
            if site is None:
                self._cancelling.pop(order_id)
                continue
            try:
                relay.cancel(site.telescope, order_id, overdue.reason)
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                    continue  # not reached: tried again next round
            self._cancelling.pop(order_id)

    def _guarded(self, send: Callable[[Any], None], item: object, what: str) -> None:
        """One item sent; one that cannot be must not stop the others (Stopping passes through)."""
        try:
            send(item)
        except Stopping:
            raise
        except Exception:
            log.exception("%s not sent", what)

    def _move_away(self, move: DueMove) -> None:
        """Galaxies a site's list left (its operator cancelled it, it failed), planned at the other sites."""
        others = [o for o in self.settings.observatories if o.name != move.site]
        pool = self.campaigns.galaxies_named(move.event, move.galaxies)
        plans = plan_first_epoch(pool, others, self.settings, self.clock.now()) if others and len(pool) else []
        relays = [
            SiteRelay(p.observatory, f"{move.event}-moved-{move.index}-{p.observatory.name}", p.pointings)
            for p in plans
            if p.pointings
        ]
        merger = datetime.fromisoformat(move.merger) if move.merger else None
        head = ListHead(move.event, move.drill, merger, f"{ALERT_RELAY}campaign")
        relay = Relay(self.services.connect, min(self.settings.relay_retry_s, FIRST_TRY_S), self._wait_or_stop)
        self._send_all(head, relays, relay)
        log.info(
            "%s: %d galaxies %s left, planned again: %s", move.event, len(move.galaxies), move.site,
            "; ".join(r.note for r in relays) or "no other site can take them",
        )  # fmt: skip
        exposure = self.settings.exposure
        self.campaigns.moved(
            move,
            [(r.observatory, r.work_order_id, r.targets, r.accepted, r.note) for r in relays],
            exposure.filter,
            exposure.exposure_time_s,
            self.clock.now(),
        )

    def _send_look(self, look: DueLook) -> None:
        """A second look at a candidate: to the site that found it, or else to another."""
        settings, exposure = self.settings.second_look, self.settings.exposure
        filter = settings.filter or exposure.filter
        seconds = settings.exposure_time_s or exposure.exposure_time_s
        merger = datetime.fromisoformat(look.merger) if look.merger else None
        target = pb.Target(
            name=look.candidate,
            ra_deg=look.ra_deg,
            dec_deg=look.dec_deg,
            exposure_count=settings.exposure_count,
            filter=filter,
            exposure_time=_duration(seconds),
        )
        relay = Relay(self.services.connect, min(self.settings.relay_retry_s, FIRST_TRY_S), self._wait_or_stop)
        problems = []
        for site in sorted(self.settings.observatories, key=lambda o: o.name != look.site):
            order = pb.WorkOrder(
                id=f"{look.event}-second-look-{look.candidate}-{site.name}",
                requester=f"{ALERT_RELAY}second-look",
                priority=settings.priority,
                observe_targets=pb.ObserveTargets(
                    alert_id=look.event, drill=look.drill, event_time=_timestamp(merger), targets=[target]
                ),
            )
            try:
                relay.submit(site.telescope, order)
            except grpc.RpcError as exc:
                problems.append(f"{site.name}: {exc.code().name}: {exc.details()}")
                continue
            self._record_order(look.event, site.telescope, order.id)
            note = f"{settings.exposure_count} × {seconds:g} s in {filter} at {site.name}"
            log.info("second look at %s of %s sent: %s", look.candidate, look.event, note)
            self.campaigns.looked(look, site, order.id, filter, seconds, note, self.clock.now())
            return
        note = "no telescope took it (" + "; ".join(problems or ["no observatory configured"]) + ")"
        log.warning("second look at %s of %s: %s", look.candidate, look.event, note)
        self.campaigns.looked(look, None, "", filter, seconds, note, self.clock.now())

    def _wait_or_stop(self, seconds: float) -> None:
        if self._stopping.wait(seconds):
            raise Stopping

    def _published(self, event: str, text: str) -> None:
        if not text.startswith("published"):
            log.warning("campaign %s: %s", event, text)
        self.campaigns.published(event, text, self.clock.now())

    def _site_event(
        self, handle: Callable[[str, pb.Event, datetime], None], site: str, _: object, event: pb.Event
    ) -> None:
        handle(site, event, self.clock.now())

    def _campaign_followers(self) -> list[EventFollower]:
        """Each site's telescope (frames, ended work orders) and preprocessor (depth, candidates), followed for
        the campaigns."""
        followers = []
        for site in self.settings.observatories:
            roles = [
                ("telescope", site.telescope, [pb.EVENT_KIND_IMAGE_READY, pb.EVENT_KIND_WORK_ORDER_UPDATE],
                 self.campaigns.telescope_event),
            ]  # fmt: skip
            if site.preprocessor:
                kinds = [pb.EVENT_KIND_CALIBRATION_PROGRESS, pb.EVENT_KIND_TRANSIENT_CANDIDATE,
                         pb.EVENT_KIND_FORCED_PHOTOMETRY, pb.EVENT_KIND_CANDIDATE_LABELLED]  # fmt: skip
                roles.append(("preprocessor", site.preprocessor, kinds, self.campaigns.preprocessor_event))
            for role, address, events, handle in roles:
                followers.append(
                    EventFollower(
                        f"{site.name} {role}",
                        address,
                        events,
                        functools.partial(self._site_event, handle, site.name),
                        self.services,
                        journal_keys.campaign_position(site.name, role),
                        retry_on=(OSError,),
                    )
                )
        return followers

    def receive(self, payload: bytes, key: str) -> None:
        """A notice from a listener: kept raw, then journaled as a process_alert work order with id ``key``.

        A notice that cannot be accepted is recorded (an alert_processed event naming the raw file and the
        reason) and dropped, so that the listener moves on to the next one; either way it is durably stored
        before the listener acknowledges it. Only a journal that cannot store it stops the acknowledgement."""
        order = pb.WorkOrder(
            id=key,
            requester=f"{LISTENER}{key.split('-', 1)[0]}",
            process_alert=pb.ProcessAlert(payload=payload or b"", source=key),
        )
        try:
            self.services.submit(order)
            return
        except InvalidWorkOrder as exc:
            reason = str(exc)
        except (JournalUnavailable, StorageUnavailable):
            raise
        except Exception as exc:  # a notice must never stop intake, whatever it does to the code that reads it
            log.exception("notice %s could not be accepted", key)
            reason = f"not accepted ({type(exc).__name__}: {exc})"
        raw = self.archive(payload or b"")
        self.journal.append_event(
            key, alert_processed=pb.AlertProcessed(message=f"refused: {reason} (raw notice {raw})")
        )

    def intake_problem(self, text: str) -> None:
        """A listener's problem with its source (not with one notice): a log line and an event."""
        log.warning("%s", text)
        try:
            self.journal.append_event("", alert_processed=pb.AlertProcessed(message=text))
        except JournalUnavailable:  # the log line is what is left; the listener goes on either way
            log.error("the journal cannot record the intake problem above")

    def status_message(self) -> str:
        observatories = ", ".join(o.name for o in self.settings.observatories) or "none configured"
        catalog = f"{len(self.index)} galaxies" if self.index is not None else "no catalog"
        return f"observatories: {observatories}; {catalog}"

    # -- intake ----------------------------------------------------------------------------------

    def archive(self, payload: bytes) -> Path:
        """Every notice received is kept raw, before it is parsed (named by its sha256, so once only)."""
        digest = hashlib.sha256(payload).hexdigest()
        path = self.storage_root / "alerts" / "raw" / f"{digest}.bin"
        if not path.exists():
            try:
                with atomic_write(path) as stream:
                    stream.write(payload)
            except OSError as exc:
                raise StorageUnavailable(
                    f"storage: cannot keep the notice under {path.parent}: {exc.strerror or exc}"
                ) from None
        return path

    def check_process_alert(self, task: pb.ProcessAlert, check: Checker) -> None:
        orders.check_process_alert(task, check)
        path = self.archive(task.payload)
        try:
            parse_notice(task.payload, task.format)
        except BadNotice as exc:
            log.warning("notice %s from %s refused: %s", path.name, task.source or "a client", exc)
            check.fail("payload", str(exc))

    # -- processing ------------------------------------------------------------------------------

    def _event_lock(self, alert_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._event_locks.setdefault(alert_id, threading.Lock())

    def process_alert(self, context: TaskContext[pb.ProcessAlert]) -> str:
        alert = parse_notice(context.task.payload, context.task.format)
        if context.task.drill:
            alert = as_drill(alert, context.id)
        # Notices of one event are handled one at a time, so that a retraction never overtakes the relay of
        # the notice before it.
        with self._event_lock(alert.alert_id):
            return self._process(alert, context)

    def _process(self, alert: Alert, context: TaskContext[pb.ProcessAlert]) -> str:
        """Gate, rank, relay (the telescopes first: every second counts), notify, then keep the products."""
        report = Report(alert, context)
        if (reason := self._gate(alert, context)) is not None:
            return report.done(f"{report.label}: {reason}")
        relay = Relay(self.services.connect, self.settings.relay_retry_s, context.sleep_real)
        if alert.retraction:
            self.journal.set_value(journal_keys.event_retracted(alert.alert_id), context.id)
            message = self._retract(alert, relay, report.label)
            self.campaigns.retracted(alert.alert_id, self.clock.now())
            return report.done(message)
        if (reason := self._held(alert)) is not None:
            return report.done(f"{report.label}: {reason}; not relayed")
        try:
            skymap, skymap_bytes = self._skymap(alert, context)
        except BadSkymap as exc:
            return report.failed(f"{report.label}: sky map unavailable: {exc}; nothing relayed")
        if self.index is None:
            return report.failed(f"{report.label}: no galaxy catalog configured (alert.catalog); nothing relayed")
        ranked = rank(
            self.index,
            skymap,
            credible_level=self.settings.credible_level,
            luminosity_weighting=self.settings.luminosity_weighting,
        )
        withdrawn = self._withdraw(alert, context)
        sites = self._relay(alert, ranked, context, relay)
        relayed = sum(len(site.targets) for site in sites if site.accepted)
        self._campaign(alert, skymap, skymap_bytes, ranked, sites)
        summary = f"{report.label}: {len(ranked)} galaxies in the credible region of {alert.skymap_source}; " + (
            "; ".join([withdrawn] * bool(withdrawn) + [site.note for site in sites])
        )
        if relayed:
            targets = {
                site.observatory.name: [target_record(order, t) for order, t in enumerate(site.targets, start=1)]
                for site in sites
            }
            notify(
                self.settings.notify,
                f"TOROS: {report.label}",
                summary,
                {"alert_id": alert.alert_id, "targets": targets},
            )
        try:
            self._keep_products(alert, context, skymap, ranked, sites, report.label)
        except OSError as exc:  # the targets went out all the same: say so, and what could not be kept
            return report.failed(
                f"{summary}; storage: cannot write the target lists and plot ({exc.filename}): {exc.strerror or exc}",
                relayed,
            )
        return report.done(summary, relayed)

    def _gate(self, alert: Alert, context: TaskContext[pb.ProcessAlert]) -> str | None:
        """Why this notice is not handled at all (a drill when drills are off, a duplicate), else None; the
        first handling of a notice is recorded."""
        if alert.is_test and not self.settings.process_test_alerts and not context.task.drill:
            return "test alert ignored (alert.process_test_alerts is false)"
        seen = journal_keys.notice_handled(alert.notice_key)
        first = self.journal.get_value(seen)
        if first not in (None, context.id):
            return f"duplicate notice, already handled by {first}; not relayed again"
        self.journal.set_value(seen, context.id)
        return None

    def _held(self, alert: Alert) -> str | None:
        """Why an event's targets are not relayed (retracted before, too frequent a false alarm, not
        significant), else None."""
        if retraction := self.journal.get_value(journal_keys.event_retracted(alert.alert_id)):
            return f"the event was retracted ({retraction})"
        if self.settings.far_threshold_hz is not None and (alert.far_hz or 0) > self.settings.far_threshold_hz:
            return f"FAR {alert.far_hz:.3g} Hz above alert.far_threshold_hz"
        if self.settings.significant_only and not alert.significant:
            return "not marked significant (alert.significant_only)"
        return None

    def _relay(
        self, alert: Alert, ranked: Ranked, context: TaskContext[pb.ProcessAlert], relay: Relay
    ) -> list[SiteRelay]:
        """The first epoch planned for all observatories together, each site's pointings sent to its telescope,
        all at once. A site that does not take its list within ``FIRST_TRY_S`` is passed over: its galaxies are
        planned at the sites that did, as lists of their own. When no site took one, every site is tried for
        as long as ``alert.relay_retry_s`` allows."""
        pool = self._pool(ranked)
        seen = self.campaigns.observed(alert.alert_id, pool)
        if seen.any():  # an update of the map: what was taken already is not planned again
            pool = pool.subset(list(np.flatnonzero(~seen)))
        plans = plan_first_epoch(pool, self.settings.observatories, self.settings, self.clock.now())
        sites = [
            SiteRelay(p.observatory, f"{alert.alert_id}-{context.id}-{p.observatory.name}", p.pointings, note=p.note)
            for p in plans
        ]
        for site in sites:
            if not site.targets:
                site.note = f"{site.observatory.name}: {site.note}"
        waiting = [site for site in sites if site.targets]
        first_try = Relay(self.services.connect, min(self.settings.relay_retry_s, FIRST_TRY_S), context.sleep_real)
        self._send_all(ListHead.of(alert, context), waiting, first_try, context.check)
        failed = [site for site in waiting if not site.accepted]
        accepted = [site for site in waiting if site.accepted]
        if failed and accepted:
            sites += self._move(alert, pool, failed, accepted, context, first_try)
        elif failed:
            self._send_all(ListHead.of(alert, context), failed, relay, context.check)
        return sites

    def _send_all(
        self, head: ListHead, sites: list[SiteRelay], relay: Relay, check: Callable[[], None] = lambda: None
    ) -> None:
        """Each site's list sent to its telescope in parallel: a slow or dead site delays no other."""
        if not sites:
            return
        check()
        with ThreadPoolExecutor(max_workers=len(sites), thread_name_prefix="relay") as senders:
            answers = list(senders.map(lambda site: self._send(head, site, relay), sites))
        for site, (accepted, note) in zip(sites, answers, strict=True):
            site.accepted, site.note = accepted, note

    def _move(
        self,
        alert: Alert,
        pool: Galaxies,
        failed: list[SiteRelay],
        accepted: list[SiteRelay],
        context: TaskContext[pb.ProcessAlert],
        relay: Relay,
    ) -> list[SiteRelay]:
        """The galaxies of the sites that did not take their lists, planned at the sites that did."""
        rows = sorted({galaxy.rank - 1 for site in failed for pointing in site.targets for galaxy in pointing.galaxies})
        observatories = [site.observatory for site in accepted]
        plans = plan_first_epoch(pool.subset(rows), observatories, self.settings, self.clock.now())
        moved = [
            SiteRelay(p.observatory, f"{alert.alert_id}-{context.id}-{p.observatory.name}-moved", p.pointings)
            for p in plans
            if p.pointings
        ]
        self._send_all(ListHead.of(alert, context), moved, relay, context.check)
        to = ", ".join(site.observatory.name for site in moved if site.accepted) or "no other site that can see them"
        for site in failed:
            site.note += f"; its galaxies planned again at {to}"
        for site in moved:
            site.note = site.note.replace("targets accepted", "targets moved here accepted")
        return moved

    def _campaign(
        self, alert: Alert, skymap: SkyMap, skymap_bytes: bytes | bytearray, ranked: Ranked, sites: list[SiteRelay]
    ) -> None:
        """The event's campaign takes the notice's map, ranking and pointings."""
        index = self.index
        assert index is not None, "ranked, so there is a catalog"
        rows = np.asarray(ranked.rows)
        sky = EventSky(
            skymap,
            np.array([n.decode(errors="replace").strip() for n in index.name[rows]], dtype=str),
            np.asarray(index.ra[rows], dtype=float),
            np.asarray(index.dec[rows], dtype=float),
            np.asarray(index.dist[rows], dtype=float),
            np.asarray(ranked.score, dtype=float) / (float(np.sum(ranked.score)) or 1.0),
        )
        exposure = self.settings.exposure
        self.campaigns.relayed(
            alert.alert_id,
            drill=alert.is_test,
            merger=alert.event_time,
            notice=alert.created,
            now=self.clock.now(),
            sky=sky,
            skymap_bytes=skymap_bytes,
            sites=[(s.observatory, s.work_order_id, s.targets, s.accepted, s.note) for s in sites],
            filter=exposure.filter,
            exposure_s=exposure.exposure_time_s,
        )

    def _pool(self, ranked: Ranked) -> Galaxies:
        index = self.index
        assert index is not None, "ranked, so there is a catalog"
        return Galaxies.of(index, ranked, pool_size(self.settings, ranked))

    def _keep_products(
        self,
        alert: Alert,
        context: TaskContext[pb.ProcessAlert],
        skymap: SkyMap,
        ranked: Ranked,
        sites: list[SiteRelay],
        label: str,
    ) -> None:
        """The target lists (CSV, JSON), the sky-map plot, and the sky view a browser draws, as products of
        the work order."""
        folder = path_inside(
            self.storage_root, "alerts", alert.alert_id, f"{alert.alert_type.lower()}-{alert.serial}-{context.id}"
        )
        per_site = {site.observatory.name: site.targets for site in sites}
        for name, targets in per_site.items():
            for path in write_targets(folder, name, targets):
                context.add_product(path, "target_list")
        view = sky_view(skymap, ranked.credible) | {
            "alert": self._banner(alert, label),
            "credible_level": self.settings.credible_level,
            "exposure": self.settings.exposure.model_dump(),
            "galaxies": self._galaxies(ranked),
            "sites": [
                {
                    "name": site.observatory.name,
                    "telescope": site.observatory.telescope,
                    "work_order_id": site.work_order_id,
                    "accepted": site.accepted,
                    "note": site.note,
                    "targets": [target_record(order, t) for order, t in enumerate(site.targets, start=1)],
                }
                for site in sites
            ],
        }
        context.add_product(write_sky_view(folder / "skymap.json", view), "sky_view")
        title = f"{label}: {int(self.settings.credible_level * 100)}% credible region"
        context.add_product(plot_skymap(folder / "skymap.png", skymap, ranked.credible, title, per_site), "skymap_plot")

    @staticmethod
    def _banner(alert: Alert, label: str) -> dict[str, object]:
        """What a person reads first about a notice."""
        return {
            "label": label,
            "alert_id": alert.alert_id,
            "alert_type": alert.alert_type,
            "serial": alert.serial,
            "drill": alert.is_test,
            "event_time": alert.event_time.isoformat() if alert.event_time else None,
            "far_hz": alert.far_hz,
            "significant": alert.significant,
            "instruments": list(alert.instruments),
            "classification": alert.classification,
            "properties": alert.properties,
            "skymap_source": alert.skymap_source,
        }

    def _galaxies(self, ranked: Ranked) -> list[dict[str, object]]:
        """The best-ranked galaxies of the credible region, chosen for a site or not."""
        index = self.index
        assert index is not None, "ranked, so there is a catalog"
        rows = np.asarray(ranked.rows[:GALAXIES_SHOWN])
        return [
            {
                "rank": number + 1,
                "name": index.name[row].decode(errors="replace").strip(),
                "ra_deg": round(float(index.ra[row]), 5),
                "dec_deg": round(float(index.dec[row]), 5),
                "distance_mpc": float(index.dist[row]) if np.isfinite(index.dist[row]) else None,
                "score": float(ranked.score[number]),
            }
            for number, row in enumerate(rows)
        ]

    def _skymap(self, alert: Alert, context: TaskContext[pb.ProcessAlert]) -> tuple[SkyMap, bytes | bytearray]:
        """The notice's sky map, read, and its bytes (the campaign keeps them)."""
        if alert.skymap is None:
            raise BadSkymap("the notice names no sky map")
        data: bytes | bytearray = alert.skymap.data
        if not data:
            settings = self.settings.skymap
            context.progress(10, f"downloading {alert.skymap.url}")
            data = download(alert.skymap.url, settings, wait=context.sleep_real)
        return read_skymap(data, self.settings.skymap.max_bytes), data

    def _send(self, head: ListHead, site: SiteRelay, relay: Relay) -> tuple[bool, str]:
        """Relays one site's targets; returns whether its telescope accepted them, and a note."""
        exposure = self.settings.exposure
        observatory, targets = site.observatory, site.targets
        order = pb.WorkOrder(
            id=site.work_order_id,
            requester=head.requester,
            priority=90,
            observe_targets=pb.ObserveTargets(
                alert_id=head.alert_id,
                drill=head.drill,
                event_time=_timestamp(head.event_time),
                targets=[
                    pb.Target(
                        name=t.name,
                        ra_deg=t.ra_deg,
                        dec_deg=t.dec_deg,
                        score=t.probability,
                        distance_mpc=t.galaxies[0].distance_mpc or 0.0,
                        exposure_count=exposure.exposure_count,
                        filter=exposure.filter,
                        exposure_time=_duration(exposure.exposure_time_s),
                    )
                    for t in targets
                ],
            ),
        )
        try:
            relay.submit(observatory.telescope, order)
        except grpc.RpcError as exc:
            return False, f"{observatory.name}: telescope refused or unreachable ({exc.code().name}: {exc.details()})"
        self._record_order(head.alert_id, observatory.telescope, order.id)
        galaxies = sum(len(t.galaxies) for t in targets)
        return True, f"{observatory.name}: {len(targets)} targets accepted ({galaxies} galaxies)"

    def _record_order(self, alert_id: str, address: str, order_id: str) -> None:
        """A list sent for the event, kept for its retraction (lists are sent from several threads)."""
        key = journal_keys.event_orders(alert_id)
        with self._orders_lock:
            sent = json.loads(self.journal.get_value(key) or "[]")
            if [address, order_id] not in sent:
                self.journal.set_value(key, json.dumps(sent + [[address, order_id]]))

    def _retract(self, alert: Alert, relay: Relay, label: str) -> str:
        return f"{label}: retraction; " + self._cancel_lists(alert.alert_id, relay, f"{alert.alert_id} retracted")

    def _withdraw(self, alert: Alert, context: TaskContext[pb.ProcessAlert]) -> str:
        """A new sky map for an event already relayed: its lists still running are cancelled (what they took
        stays taken), so that the new plan's lists replace them; a sentence saying so, or "" on a first notice."""
        sent = json.loads(self.journal.get_value(journal_keys.event_orders(alert.alert_id)) or "[]")
        if not sent:
            return ""
        self.campaigns.withdrawing(alert.alert_id, [order_id for _, order_id in sent])
        quick = Relay(self.services.connect, min(self.settings.relay_retry_s, FIRST_TRY_S), context.sleep_real)
        reason = f"{alert.alert_id} re-planned from its {alert.alert_type.lower()} notice #{alert.serial}"
        return "earlier lists withdrawn: " + self._cancel_lists(alert.alert_id, quick, reason)

    def _cancel_lists(self, alert_id: str, relay: Relay, reason: str) -> str:
        """Every list the event sent and not withdrawn yet, cancelled; how it went, in words."""
        sent = json.loads(self.journal.get_value(journal_keys.event_orders(alert_id)) or "[]")
        withdrawn_key = journal_keys.event_withdrawn(alert_id)
        withdrawn = set(json.loads(self.journal.get_value(withdrawn_key) or "[]"))
        active = [(address, order_id) for address, order_id in sent if order_id not in withdrawn]
        cancelled, finished, problems = 0, [], []
        for address, order_id in active:
            try:
                status = relay.cancel(address, order_id, reason)
            except grpc.RpcError as exc:
                problems.append(f"{order_id} at {address}: {exc.code().name}")
                continue
            withdrawn.add(order_id)
            if status.state in (pb.WORK_ORDER_STATE_DONE, pb.WORK_ORDER_STATE_FAILED):
                finished.append(f"{order_id} {state_name(status.state).upper()}")
            else:
                cancelled += 1
        self.journal.set_value(withdrawn_key, json.dumps(sorted(withdrawn)))
        text = f"{cancelled} of {len(active)} target lists cancelled"
        if finished:
            text += f", {len(finished)} already finished ({', '.join(finished)})"
        return text + (f" (not cancelled: {', '.join(problems)})" if problems else "")


def as_drill(alert: Alert, work_order_id: str) -> Alert:
    """A notice replayed on purpose as a drill: an event of its own ("<superevent>-drill"), each replay a new
    notice (its key names the work order), never mistaken for the real event."""
    alert_id = alert.alert_id if alert.alert_id.endswith("-drill") else f"{alert.alert_id}-drill"
    return replace(alert, alert_id=alert_id, is_test=True, drill_key=f"drill/{work_order_id}")


def _duration(seconds: float) -> Duration:
    return Duration(seconds=int(seconds), nanos=int(seconds % 1 * 1e9))


def _timestamp(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp
