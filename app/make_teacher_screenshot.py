"""Make the README's teacher screenshot: the teacher's page on the pocket zoo with the first challenge running (best
average with one lambda per task) and three students' board entries ranked.

    python -m app.make_teacher_screenshot [--out assets/teacher.png]

Needs Debian's chromium (``apt-get install chromium``) and python playwright. The students are sessions driven
through the lesson's own verbs (step 2 with one lambda, or one lambda per task, then "add to the class board"); the
teacher opens the page, types the code and starts the challenge with two clicks, as a teacher would.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import wemoe  # noqa: F401  (before open_clip)
from app import build_demo, lesson, lesson_lambdas, teacher
from app.session import ROOT, AppConfig, Session
from app.style import launch_style

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
CODE = "owl-42"
# nickname -> what the student added: one lambda for every task (no tasks of their own), or one lambda per task (a
# lambda for the tasks not named)
STUDENTS: dict[str, tuple[float, dict[str, float]]] = {
    "Ada": (0.2, {"pocket_digits": 0.3, "pocket_letters": 0.25}),
    "Grace": (0.2, {}),
    "Alan": (0.3, {"pocket_textures": 0.5, "pocket_clothing": 0.1}),
}


def add_students(config: AppConfig) -> list[Session]:
    """Each of :data:`STUDENTS` opens the lesson, runs step 2 and adds the result to the class board."""
    sessions = []
    for index, (nickname, (lam, own)) in enumerate(STUDENTS.items()):
        student = Session()
        student.session_hash = f"screenshot-{index}"
        lesson.meet(student, config, None)
        if own:
            tasks = student.bench.task_names
            lesson_lambdas.add_per_task(student, config, {t: own.get(t, lam) for t in tasks})
            lesson.add_to_board(student, "lambdas", nickname)
        else:
            lesson.add_up(student, config, lam)
            lesson.add_to_board(student, "lambda", nickname)
        sessions.append(student)
    return sessions


def main() -> None:
    """Drive the teacher's page in Chromium and save the screenshot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "teacher.png")
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    os.environ[teacher.CODE_ENV] = CODE
    config = AppConfig()
    demo = build_demo(config)
    demo.queue()
    demo.launch(prevent_thread_lock=True, quiet=True, **launch_style())
    sessions: list[Session] = []
    try:
        lesson.meet(Session(), config, None)  # the class's zoo is loaded before the teacher starts a challenge
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(demo.local_url.rstrip("/") + "/teacher")
            page.locator("#teacher-code input").fill(CODE)
            page.locator("#teacher-open").click()
            expect(page.locator("#teacher-status")).to_contain_text("with the lesson open", timeout=120_000)
            page.locator("#challenge-start").click()  # the first preset and its time limit, as offered
            expect(page.locator("#challenge-status")).to_contain_text("min", timeout=60_000)
            sessions = add_students(config)
            expect(page.locator("#challenge-leaderboard")).to_contain_text(list(STUDENTS)[-1], timeout=60_000)
            for student in sessions:  # their pages' tick (a page silent for 4.5 s is not counted)
                config.shared.here(student)
            expect(page.locator("#teacher-status")).to_contain_text(f"{len(STUDENTS)} students", timeout=4_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    finally:
        for student in sessions:
            student.close()
        demo.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
