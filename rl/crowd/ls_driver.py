"""The Label Studio side of ``rl labelstudio``: a standalone script run by the Label Studio venv's python.

``.venv-labelstudio/bin/python rl/crowd/ls_driver.py ACTION --in request.json --out reply.json``

It imports only the standard library, ``label_studio_sdk`` and ``httpx`` (the SDK's HTTP client), and
``playwright`` for the ``browse`` action, all of them installed in ``.venv-labelstudio`` only (their
pins conflict with the project's); it never imports the project. The project side
(:mod:`rl.crowd.ls_server`) builds the requests and reads the replies: plain JSON files. Importing this
module needs none of those packages (they are imported inside the actions), so the project's checks
can import it.

Actions (every request has ``url``; the admin ones ``token``, a legacy API token):

``push``      create the project (or reuse ``project_id``) with ``label_config`` and
              ``maximum_annotations``, import ``tasks`` (each ``{"data": ...}``), sign up the
              ``annotators`` (``{"email", "password"}``) through the organisation's invite link (an
              existing account is kept). Reply: ``project_id``, ``task_ids`` (in request order),
              ``invite_url``, ``users`` (email -> user id).
``status``    ``project_id`` -> ``tasks``: ``[{"id", "total_annotations", "cancelled_annotations"}]``.
``pull``      ``project_id`` -> ``tasks`` (Label Studio's JSON export, through the API) and ``users``
              (``[{"id", "email"}]``).
``annotate``  ``annotators``: ``[{"email", "password", "annotations": [{"task", "result", "lead_time",
              "was_cancelled"}]}]``: each annotator logs in with its password, gets its own token and
              posts its annotations as itself; an annotator's second annotation of a task edits the
              first one (PATCH), as the labelling page does. Reply: ``posted``, ``edited``.
``overlap``   ``overlaps``: ``{task id: n}``: each task wants ``n`` annotations (PATCH ``/api/tasks/<id>/``
              with ``overlap`` and ``is_labeled``; Label Studio does not recompute ``is_labeled`` when
              a task's overlap changes, and its label stream hands out only tasks not labeled yet).
              Reply: ``tasks``: ``[{"id", "overlap", "is_labeled", "total_annotations"}]`` as read back.
``webhook``   ``project_id``, ``target`` (the listener's URL), ``headers`` (sent with every post: the
              shared secret), ``actions``: registers a project webhook that sends the payload
              (``client.webhooks.create``). Reply: ``id``, ``url``, ``actions``. With ``delete``: a
              webhook id, removes that webhook instead (``client.webhooks.delete``). Reply: ``deleted``.
``users``     -> ``users``: ``[{"id", "email"}]`` (for the listener: the e-mail of a user id that is not
              one of the round's accounts).
``browse``    ``email``, ``password``, ``project_id``, ``task_id``, ``screenshot``, ``chromium``: logs in
              with headless Chromium, opens the task's labelling page, counts its choice controls and
              saves a screenshot. Reply: ``n_choice_groups``, ``n_radios``.

Errors: one line on stderr (``ls_driver ACTION: error: ...``) and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

__all__ = ["ACTIONS", "main"]


def _client(url: str, token: str):
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=url, api_key=token, timeout=120)


def _http(url: str, token: str | None = None):
    import httpx

    headers = {"Authorization": f"Token {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=120, follow_redirects=False)


def _check(resp, what: str):
    if resp.status_code >= 400:
        raise RuntimeError(f"{what}: HTTP {resp.status_code}: {resp.text[:300]}")
    return resp


def _session_login(url: str, email: str, password: str, signup_token: str | None = None):
    """An httpx client logged in as ``email`` through the web form (signing up first with the invite token)."""
    s = _http(url)
    page = "/user/signup/" if signup_token else "/user/login/"
    query = f"?token={signup_token}" if signup_token else ""
    _check(s.get(page + query), f"GET {page}")
    csrf = s.cookies.get("csrftoken")
    if not csrf:
        raise RuntimeError(f"GET {page}: no csrftoken cookie")
    form = {"csrfmiddlewaretoken": csrf, "email": email, "password": password}
    if not signup_token:
        form["persist_session"] = "on"
    r = s.post(page + query, data=form, headers={"Referer": url + page})
    if r.status_code != 302:  # the form page again: the error is in the HTML
        errs = re.findall(r'class="[^"]*error[^"]*"[^>]*>\s*([^<]+)', r.text)
        raise RuntimeError(f"{'sign-up' if signup_token else 'login'} of {email} failed (HTTP {r.status_code}): {errs[:2] or r.text[:200]}")
    return s


def _user_token(url: str, email: str, password: str) -> str:
    """Log in as ``email`` and return the user's own (legacy) API token."""
    s = _session_login(url, email, password)
    try:
        r = _check(s.get("/api/current-user/token"), f"token of {email}")
        return r.json()["token"]
    finally:
        s.close()


def _users(http) -> dict[str, int]:
    r = _check(http.get("/api/users/", params={"page_size": 100000}), "list users")
    body = r.json()
    rows = body["results"] if isinstance(body, dict) and "results" in body else body
    return {u["email"].lower(): u["id"] for u in rows}


def act_push(req: dict) -> dict:
    ls = _client(req["url"], req["token"])
    http = _http(req["url"], req["token"])
    settings = {
        "label_config": req["label_config"],
        "maximum_annotations": req["maximum_annotations"],
        "overlap_cohort_percentage": 100,
        "show_skip_button": True,
        "enable_empty_annotation": True,
    }
    if req.get("project_id"):
        pid = int(req["project_id"])
        ls.projects.update(id=pid, **settings)
    else:
        pid = ls.projects.create(title=req["title"], description=req.get("description", ""), **settings).id
    before = {t["id"] for t in _task_rows(http, pid)}
    ls.projects.import_tasks(id=pid, request=req["tasks"], return_task_ids=True)
    by_key = {t["data"].get("key"): t["id"] for t in _task_rows(http, pid) if t["id"] not in before}
    missing = [t["data"]["key"] for t in req["tasks"] if t["data"]["key"] not in by_key]
    if missing or len(by_key) != len(req["tasks"]):
        raise RuntimeError(f"project {pid}: imported {len(req['tasks'])} tasks, {len(by_key)} new (missing keys {missing[:5]})")
    new = [by_key[t["data"]["key"]] for t in req["tasks"]]
    invite = _check(http.get("/api/invite"), "invite link").json()
    known = _users(http)
    for a in req.get("annotators", []):
        if a["email"].lower() not in known:
            _session_login(req["url"], a["email"], a["password"], signup_token=invite["token"]).close()
    users = _users(http)
    return {
        "project_id": pid,
        "task_ids": new,
        "invite_url": req["url"].rstrip("/") + invite["invite_url"],
        "users": {a["email"]: users[a["email"].lower()] for a in req.get("annotators", [])},
    }


def _task_rows(http, pid: int) -> list[dict]:
    rows, page = [], 1
    while True:
        r = http.get("/api/tasks/", params={"project": pid, "page": page, "page_size": 1000, "fields": "all"})
        if r.status_code == 404:  # past the last page
            break
        body = _check(r, f"list tasks of project {pid}").json()
        batch = body.get("tasks", []) if isinstance(body, dict) else body
        rows += batch
        if len(batch) < 1000:
            break
        page += 1
    return rows


def act_status(req: dict) -> dict:
    http = _http(req["url"], req["token"])
    rows = _task_rows(http, int(req["project_id"]))
    keys = ("id", "total_annotations", "cancelled_annotations", "overlap", "is_labeled")
    return {"tasks": [{k: t.get(k, 0) for k in keys} for t in rows]}


def act_overlap(req: dict) -> dict:
    http = _http(req["url"], req["token"])
    out = []
    for tid, n in req["overlaps"].items():
        task = _check(http.get(f"/api/tasks/{int(tid)}/"), f"task {tid}").json()
        body = {"overlap": int(n), "is_labeled": task.get("total_annotations", 0) >= int(n)}
        _check(http.patch(f"/api/tasks/{int(tid)}/", json=body), f"set overlap of task {tid}")
        t = _check(http.get(f"/api/tasks/{int(tid)}/"), f"task {tid}").json()
        if t.get("overlap") != int(n) or t.get("is_labeled") != body["is_labeled"]:
            raise RuntimeError(f"task {tid}: overlap {t.get('overlap')}, is_labeled {t.get('is_labeled')} after setting {body}")
        out.append({k: t.get(k) for k in ("id", "overlap", "is_labeled", "total_annotations")})
    http.close()
    return {"tasks": out}


def act_pull(req: dict) -> dict:
    http = _http(req["url"], req["token"])
    pid = int(req["project_id"])
    r = _check(http.get(f"/api/projects/{pid}/export", params={"exportType": "JSON", "download_all_tasks": "true"}), "export")
    users = _check(http.get("/api/users/", params={"page_size": 100000}), "list users").json()
    users = users["results"] if isinstance(users, dict) and "results" in users else users
    return {"tasks": r.json(), "users": [{"id": u["id"], "email": u["email"]} for u in users]}


def act_webhook(req: dict) -> dict:
    ls = _client(req["url"], req["token"])
    if req.get("delete") is not None:
        ls.webhooks.delete(id=int(req["delete"]))
        return {"deleted": int(req["delete"])}
    wh = ls.webhooks.create(
        url=req["target"],
        project=int(req["project_id"]),
        headers=dict(req.get("headers") or {}),
        actions=list(req["actions"]),
        send_payload=True,
        send_for_all_actions=False,
        is_active=True,
    )
    return {"id": wh.id, "url": wh.url, "actions": sorted(wh.actions or [])}


def act_users(req: dict) -> dict:
    http = _http(req["url"], req["token"])
    try:  # the e-mails as stored (the pull names annotators by them)
        body = _check(http.get("/api/users/", params={"page_size": 100000}), "list users").json()
    finally:
        http.close()
    rows = body["results"] if isinstance(body, dict) and "results" in body else body
    return {"users": [{"id": u["id"], "email": u["email"]} for u in rows]}


def act_annotate(req: dict) -> dict:
    url, posted, edited = req["url"], 0, 0
    for a in req["annotators"]:
        token = _user_token(url, a["email"], a["password"])
        ls = _client(url, token)
        http = _http(url, token)
        me = _check(http.get("/api/current-user/whoami"), "whoami").json()["id"]
        for ann in a["annotations"]:
            task = int(ann["task"])
            theirs = _check(http.get(f"/api/tasks/{task}/annotations/"), f"annotations of task {task}").json()
            mine = [x for x in theirs if (x["completed_by"]["id"] if isinstance(x["completed_by"], dict) else x["completed_by"]) == me]
            body = {"result": ann["result"], "lead_time": ann.get("lead_time", 1.0), "was_cancelled": bool(ann.get("was_cancelled"))}
            if mine:
                ls.annotations.update(id=mine[-1]["id"], **body)
                edited += 1
            else:
                ls.annotations.create(id=task, **body)
                posted += 1
        http.close()
    return {"posted": posted, "edited": edited}


def act_browse(req: dict) -> dict:
    from playwright.sync_api import sync_playwright

    url = req["url"].rstrip("/")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=req["chromium"], headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": int(req.get("height", 1000))})
            page.goto(f"{url}/user/login/", wait_until="domcontentloaded")
            page.fill("input[name=email]", req["email"])
            page.fill("input[name=password]", req["password"])
            page.click("button[type=submit], input[type=submit]")
            page.wait_for_url(re.compile(r".*/(projects|dashboard|).*"), timeout=60_000)
            page.goto(f"{url}/projects/{req['project_id']}/data?task={req['task_id']}", wait_until="domcontentloaded")
            page.wait_for_selector(".lsf-choices input[type=radio]", timeout=120_000)
            time.sleep(2)  # let the editor finish laying out
            visible = "els => els.filter(e => e.getClientRects().length > 0).length"
            n_groups = page.eval_on_selector_all(".lsf-choices", visible)  # one per Choices control
            n_radios = page.eval_on_selector_all(".lsf-choices input[type=radio]", visible)
            page.screenshot(path=req["screenshot"], full_page=True)
        finally:
            browser.close()
    return {"n_choice_groups": n_groups, "n_radios": n_radios}


ACTIONS = {
    "push": act_push,
    "status": act_status,
    "overlap": act_overlap,
    "pull": act_pull,
    "annotate": act_annotate,
    "webhook": act_webhook,
    "users": act_users,
    "browse": act_browse,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ls_driver", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=sorted(ACTIONS))
    p.add_argument("--in", dest="inp", required=True, help="request JSON file")
    p.add_argument("--out", required=True, help="reply JSON file")
    args = p.parse_args(argv)
    try:
        with open(args.inp, encoding="utf-8") as f:
            req = json.load(f)
        reply = ACTIONS[args.action](req)
    except Exception as e:  # one line for the project side, which names the action and the server
        detail = f"HTTP {e.status_code}: {e.body}" if hasattr(e, "status_code") and hasattr(e, "body") else str(e)  # the SDK's ApiError
        msg = re.sub(r"\s*\n\s*", " ", f"{type(e).__name__}: {detail}")[:2000]
        print(f"ls_driver {args.action}: error: {msg}", file=sys.stderr)
        return 2
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(reply, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
