//! An invocation run in its request's own task until the response head is out.
//!
//! A guest that answers at once (most do) is done within one poll: spawning it as a task of
//! its own then cost a spawn, a wake-up of another worker through tokio's eventfd and a
//! cross-task wake for the response head, per request, for nothing. So the request's task
//! polls the invocation itself, together with the channel its head comes through. Only
//! an invocation still running when the head arrives (a streaming body, work after the
//! answer) is handed to a task of its own, tracked by the server like every task. If the
//! request's task is dropped first (the client went away), the invocation is handed over
//! the same way, so a client never cuts a guest short: it runs to its end or its timeout,
//! as before.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

/// What [`Inline::until_head`] saw first.
pub(super) enum Until<T, R> {
    /// The head arrived; the invocation may still be running.
    Head(T),
    /// The invocation ended, with its result; the head may have been sent before.
    Ended(R),
}

/// An invocation future, polled here until handed over.
pub(super) struct Inline<F: Future<Output: Send + 'static> + Send + 'static> {
    invocation: Option<Pin<Box<F>>>,
    tasks: TaskTracker,
}

impl<F: Future<Output: Send + 'static> + Send + 'static> Inline<F> {
    pub(super) fn new(invocation: F, tasks: TaskTracker) -> Self {
        Self {
            invocation: Some(Box::pin(invocation)),
            tasks,
        }
    }

    /// Polls the invocation and `head` together until the head arrives or the invocation
    /// ends. The invocation comes first, so one that answers and ends in the same poll is
    /// [`Until::Ended`]. A head dropped unsent (the guest dropped its response out-param)
    /// waits for the end, whose result says why.
    pub(super) async fn until_head<T>(
        &mut self,
        head: &mut oneshot::Receiver<T>,
    ) -> Until<T, F::Output> {
        let mut head_dropped = false;
        std::future::poll_fn(|cx| {
            if let Some(invocation) = self.invocation.as_mut()
                && let Poll::Ready(result) = invocation.as_mut().poll(cx)
            {
                self.invocation = None;
                return Poll::Ready(Until::Ended(result));
            }
            if head_dropped {
                return Poll::Pending;
            }
            match Pin::new(&mut *head).poll(cx) {
                Poll::Ready(Ok(response)) => Poll::Ready(Until::Head(response)),
                Poll::Ready(Err(_)) => {
                    head_dropped = true;
                    Poll::Pending
                }
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Hands a still-running invocation to a task of its own.
    pub(super) fn detach(&mut self) {
        if let Some(invocation) = self.invocation.take() {
            // Outside a runtime (it is shutting down) there is nothing left to run it on.
            if tokio::runtime::Handle::try_current().is_ok() {
                self.tasks.spawn(invocation);
            }
        }
    }
}

impl<F: Future<Output: Send + 'static> + Send + 'static> Drop for Inline<F> {
    fn drop(&mut self) {
        self.detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn an_invocation_that_answers_and_ends_in_one_poll_never_becomes_a_task() {
        let tasks = TaskTracker::new();
        let (sender, mut head) = oneshot::channel();
        let mut inline = Inline::new(
            async move {
                let _ = sender.send("head");
                7
            },
            tasks.clone(),
        );
        let Until::Ended(7) = inline.until_head(&mut head).await else {
            panic!("expected the invocation's end");
        };
        assert_eq!(head.try_recv().ok(), Some("head"));
        drop(inline);
        assert!(tasks.is_empty(), "nothing was spawned");
    }

    #[tokio::test]
    async fn an_invocation_still_running_after_its_head_runs_on_as_a_task() {
        let tasks = TaskTracker::new();
        let (sender, mut head) = oneshot::channel();
        let (go, wait) = oneshot::channel::<()>();
        let ended = Arc::new(AtomicBool::new(false));
        let mut inline = Inline::new(
            {
                let ended = ended.clone();
                async move {
                    let _ = sender.send("head");
                    let _ = wait.await;
                    ended.store(true, Ordering::SeqCst);
                }
            },
            tasks.clone(),
        );
        let Until::Head("head") = inline.until_head(&mut head).await else {
            panic!("expected the head first");
        };
        inline.detach();
        assert_eq!(tasks.len(), 1, "the rest runs as a tracked task");
        go.send(()).unwrap();
        tasks.close();
        tasks.wait().await;
        assert!(ended.load(Ordering::SeqCst), "and ran to its end");
    }

    #[tokio::test]
    async fn dropping_the_request_before_the_head_hands_the_invocation_over() {
        let tasks = TaskTracker::new();
        let (_sender, mut head) = oneshot::channel::<()>();
        let (go, wait) = oneshot::channel::<()>();
        let ended = Arc::new(AtomicBool::new(false));
        let mut inline = Inline::new(
            {
                let ended = ended.clone();
                async move {
                    let _ = wait.await;
                    ended.store(true, Ordering::SeqCst);
                }
            },
            tasks.clone(),
        );
        // The request's task gives up while the invocation waits.
        let polled = futures::poll!(Box::pin(inline.until_head(&mut head)));
        assert!(polled.is_pending());
        drop(inline);
        assert_eq!(tasks.len(), 1, "handed over, not dropped");
        go.send(()).unwrap();
        tasks.close();
        tasks.wait().await;
        assert!(ended.load(Ordering::SeqCst));
    }
}
