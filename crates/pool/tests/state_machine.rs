//! The transition table, exhaustively.

use flowbalancer_pool::{StateMachine, WorkerState};

#[test]
fn transition_table_is_exactly_the_documented_one() {
    use WorkerState::*;
    let allowed = [
        (Initializing, Ready),
        (Initializing, Terminating),
        (Initializing, Terminated),
        (Ready, Busy),
        (Ready, Degraded),
        (Ready, Terminating),
        (Busy, Ready),
        (Busy, Busy),
        (Busy, Degraded),
        (Busy, Terminating),
        (Degraded, Ready),
        (Degraded, Busy),
        (Degraded, Terminating),
        (Terminating, Terminated),
    ];
    for from in WorkerState::ALL {
        for to in WorkerState::ALL {
            assert_eq!(
                from.can_become(to),
                allowed.contains(&(from, to)),
                "{from} → {to}"
            );
        }
    }
}

#[test]
fn refused_moves_keep_the_state_and_history_is_bounded() {
    let mut machine = StateMachine::new(3);
    machine.transition(WorkerState::Ready, "started").unwrap();
    let error = machine
        .transition(WorkerState::Terminated, "skip")
        .unwrap_err();
    assert_eq!(
        (error.from, error.to),
        (WorkerState::Ready, WorkerState::Terminated)
    );
    assert!(error.to_string().contains("Ready → Terminated"));
    assert_eq!(machine.state(), WorkerState::Ready);
    for _ in 0..5 {
        machine.transition(WorkerState::Busy, "call").unwrap();
        machine.transition(WorkerState::Ready, "done").unwrap();
    }
    assert_eq!(machine.history().len(), 3, "only the last three are kept");
    assert_eq!(machine.history().back().unwrap().reason, "done");
    machine.transition(WorkerState::Terminating, "bye").unwrap();
    machine.transition(WorkerState::Terminated, "gone").unwrap();
    for to in WorkerState::ALL {
        assert!(machine.transition(to, "after death").is_err() || to == WorkerState::Terminated);
    }
}

#[test]
fn every_transition_is_a_tracing_event_with_its_reason() {
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::{Context, SubscriberExt};

    struct Capture(Arc<Mutex<Vec<String>>>);
    struct Fields(String);
    impl tracing::field::Visit for Fields {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!("{}={:?} ", field.name(), value));
        }
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            self.0.push_str(&format!("{}={} ", field.name(), value));
        }
    }
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let mut fields = Fields(String::new());
            event.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }
    let events = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(Capture(Arc::clone(&events)));
    tracing::subscriber::with_default(subscriber, || {
        let mut machine = StateMachine::new(4).with_owner("hot/w7");
        machine.transition(WorkerState::Ready, "started").unwrap();
        machine.transition(WorkerState::Busy, "call").unwrap();
        machine
            .transition(WorkerState::Degraded, "health check failed")
            .unwrap();
    });
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(
        events[0].contains("worker=hot/w7")
            && events[0].contains("to=Ready")
            && events[0].contains("reason=started"),
        "{}",
        events[0]
    );
    assert!(
        events[2].contains("reason=health check failed"),
        "{}",
        events[2]
    );
}
