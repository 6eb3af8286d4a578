"""The vetting page: a Flask application over a :class:`~hybrid.vet.session.VetSession`.

=====================  =====================================================================
page                   what it shows or does
=====================  =====================================================================
``/``                  the queue: the next candidates in acquisition order, votes, agreement
``/next``              the volunteer's next candidate
``/candidate/<key>``   stamps, score, type probabilities, uncertainty, context sentence,
                       features, links out; keys r / b / 1-5 / s / u vote, type, skip, undo
``/gallery``           the model's false positives and negatives on the test split, and its
                       completeness against magnitude
``/votes``             every vote cast on this pool
``/labels.csv``        the consensus per candidate (the ``human`` label source's view)
``/round``             POST: start an active-learning round; GET: its state (JSON)
=====================  =====================================================================

Volunteers name themselves once (a cookie); every vote is written to the SQLite store before the
page moves on, so a vote the page has acknowledged is never lost.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from pathlib import Path

from flask import Flask, Response, abort, jsonify, redirect, render_template, request, url_for

from hybrid.curation.human import REAL_TYPES
from hybrid.vet.render import completeness_png, stamp_png
from hybrid.vet.session import SHORTCUTS, VetSession

log = logging.getLogger(__name__)

#: outside catalogues and archives linked from a candidate's page ({ra}, {dec} in degrees)
LINKS = {
    "SIMBAD": "https://simbad.cds.unistra.fr/simbad/sim-coo?Coord={ra}%20{dec}&Radius=10&Radius.unit=arcsec",
    "NED": "https://ned.ipac.caltech.edu/conesearch?coordinates={ra}d%20{dec}d&radius=0.25",
    "TNS": "https://www.wis-tns.org/search?ra={ra}&decl={dec}&radius=10&coords_unit=arcsec",
    "Legacy Survey": "https://www.legacysurvey.org/viewer?ra={ra}&dec={dec}&layer=ls-dr10&zoom=16",
    "Pan-STARRS": "https://ps1images.stsci.edu/cgi-bin/ps1cutouts?pos={ra}%20{dec}&filter=color",
}


def _fmt(value: object) -> str:
    """A table cell: 4 significant digits for numbers, a dash for missing values."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "—"
    return f"{v:.4g}"


def _sexagesimal(ra: float, dec: float) -> str:
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    if not (math.isfinite(ra) and math.isfinite(dec)):
        return ""
    return SkyCoord(ra * u.deg, dec * u.deg).to_string("hmsdms", sep=":", precision=2)


def create_app(
    session: VetSession,
    *,
    volunteer: str = "volunteer",
    start_round: Callable[[VetSession], Path] | None = None,
) -> Flask:
    """The Flask app of ``session``.

    Args:
        session: the pool, queue and votes.
        volunteer: the name of a volunteer who has not named themselves.
        start_round: runs one active-learning round (:func:`hybrid.vet.rounds.active_round` with the
            training config bound); None hides the button.
    """
    app = Flask(__name__)
    app.jinja_env.filters["fmt"] = _fmt
    state = session.round_status
    state.setdefault("state", "idle")

    def who() -> str:
        return (request.cookies.get("volunteer") or volunteer).strip() or volunteer

    @app.context_processor
    def common() -> dict:
        return {"session": session, "volunteer": who(), "can_round": start_round is not None, "round": state}

    @app.get("/")
    def queue() -> str:
        cons = session.consensus()
        keys = session.queue_for(who(), limit=25)
        rows = session.pool.table.loc[keys] if keys else session.pool.table.iloc[:0]
        decided = cons[cons["n_votes"] >= 2]
        stats = {
            "candidates": len(session.pool),
            "voted": len(cons),
            "retired": int((cons["n_votes"] >= session.retire_after).sum()),
            "left": len(session.queue_for(who())),
            "mean_agreement": float(decided["agreement"].mean()) if len(decided) else float("nan"),
            "volunteers": session.votes()["volunteer"].nunique(),
        }
        return render_template("queue.html", rows=rows, cons=cons, stats=stats)

    @app.post("/volunteer")
    def set_volunteer() -> Response:
        name = request.form.get("name", "").strip()
        resp = redirect(request.form.get("back") or url_for("queue"), code=303)
        if name:
            resp.set_cookie("volunteer", name, max_age=3600 * 24 * 365, samesite="Lax")
        return resp

    @app.get("/next")
    def next_candidate() -> Response:
        keys = session.queue_for(who(), limit=1)
        if not keys:
            return redirect(url_for("queue", done=1), code=303)
        return redirect(url_for("candidate", key=keys[0]), code=303)

    @app.get("/candidate/<key>")
    def candidate(key: str) -> str:
        try:
            view = session.candidate(key)
        except KeyError:
            abort(404, f"no candidate {key!r} in {session.pool.name}")
        ra, dec = view["ra"], view["dec"]
        links = (
            {n: u.format(ra=f"{ra:.6f}", dec=f"{dec:+.6f}") for n, u in LINKS.items()}
            if math.isfinite(ra)
            else {}
        )
        mine = view["votes"][view["votes"]["volunteer"] == who()]
        return render_template(
            "candidate.html",
            v=view,
            links=links,
            sexagesimal=_sexagesimal(ra, dec),
            shortcuts=SHORTCUTS,
            types=REAL_TYPES,
            mine=mine.iloc[-1].to_dict() if len(mine) else None,
        )

    @app.get("/stamp/<key>/<channel>.png")
    def stamp(key: str, channel: str) -> Response:
        names = ("sci", "ref", "diff")
        if channel not in names:
            abort(404)
        try:
            image = session.pool.stamp(key)[names.index(channel)]
        except KeyError:
            abort(404)
        resp = Response(stamp_png(image), mimetype="image/png")
        resp.cache_control.max_age = 3600
        return resp

    @app.post("/vote")
    def vote() -> Response:
        key, label = request.form.get("key", ""), request.form.get("label", "")
        type_ = request.form.get("type") or None
        try:
            session.vote(key, who(), label, type_)
        except KeyError:
            abort(404, f"no candidate {key!r}")
        except ValueError as err:
            abort(400, str(err))
        return redirect(url_for("next_candidate"), code=303)

    @app.post("/undo")
    def undo() -> Response:
        key = session.undo(who())
        return redirect(url_for("candidate", key=key) if key else url_for("queue"), code=303)

    @app.get("/votes")
    def votes() -> str:
        table = session.store.votes(session.pool.name, include_undone=True)
        return render_template("votes.html", votes=table.iloc[::-1])

    @app.get("/labels.csv")
    def labels() -> Response:
        return Response(
            session.labels().to_csv(index=False),
            mimetype="text/csv",
            headers={"Content-Disposition": f"attachment; filename={session.pool.name}-labels.csv"},
        )

    @app.get("/gallery")
    def gallery() -> str:
        try:
            review = session.review()
        except ValueError as err:
            return render_template("gallery.html", review=None, error=str(err))
        return render_template("gallery.html", review=review, error=None)

    @app.get("/gallery/completeness.png")
    def completeness_plot() -> Response:
        review = session.review()
        label = "true magnitude (mag)" if review.magnitude == "truth_mag" else "PSF magnitude (mag)"
        return Response(
            completeness_png(review.curve, label=label, threshold=session.threshold), mimetype="image/png"
        )

    @app.route("/round", methods=["GET", "POST"])
    def active_round() -> Response:
        if request.method == "POST":
            if start_round is None:
                abort(404, "no training config: active-learning rounds are off")
            if state["state"] != "running":
                state.update(state="running", error=None)
                threading.Thread(target=_run_round, args=(start_round, session), daemon=True).start()
            if request.accept_mimetypes.accept_html:
                return redirect(url_for("queue"), code=303)
        return jsonify(state)

    return app


def _run_round(start_round: Callable[[VetSession], Path], session: VetSession) -> None:
    state = session.round_status
    try:
        run_dir = start_round(session)
        state.update(state="done", run_dir=str(run_dir), rounds=state.get("rounds", 0) + 1)
    except Exception as err:  # shown on the page; the server keeps serving votes
        log.exception("active-learning round failed")
        state.update(state="failed", error=f"{type(err).__name__}: {err}")
