from celery import shared_task

from doow.sessions import SessionStore


@shared_task(name="doow.clear_expired_sessions", ignore_result=True)
def clear_expired_sessions() -> None:
    """What `manage.py clearsessions` does, daily from the beat: an expired session is never read
    again (the store checks expiry), but its row would stay in the table for good."""
    SessionStore.clear_expired()
