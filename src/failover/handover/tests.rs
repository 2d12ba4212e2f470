//! The pure handover logic: generations, assembly, acks and expiry.

use super::*;

const MS: Duration = Duration::from_millis(1);

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

fn flows(ports: impl IntoIterator<Item = u16>) -> BTreeSet<Flow> {
    ports
        .into_iter()
        .map(|p| Flow {
            client: ip(100),
            client_port: p,
            port: 8080,
        })
        .collect()
}

const OLD_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

#[test]
fn a_list_is_installed_acked_updated_and_removed_on_done() {
    let t0 = Instant::now();
    let mut dep = Departure::new(7, flows(1000..1003));
    let mut st = Steering::new(ip(2), ip(234));
    let msgs = dep.messages(ip(1), ip(234), OLD_MAC);
    assert_eq!(msgs.len(), 1);
    let acts = st.on_message(t0, ip(1), &msgs[0]);
    assert_eq!(
        acts,
        vec![
            SteerAction::Install {
                mac: OLD_MAC,
                flows: flows(1000..1003)
            },
            SteerAction::Ack {
                to: ip(1),
                id: 7,
                generation: 1
            }
        ]
    );
    // The repeat is the keep-alive: acked again, nothing re-installed.
    let acts = st.on_message(t0 + 100 * MS, ip(1), &msgs[0]);
    assert!(
        matches!(acts[..], [SteerAction::Ack { generation: 1, .. }]),
        "{acts:?}"
    );
    // One connection ended: a new generation removes it.
    assert!(dep.update(flows(1000..1002)));
    assert!(
        !dep.update(flows(1000..1002)),
        "unchanged list, same generation"
    );
    let msgs = dep.messages(ip(1), ip(234), OLD_MAC);
    let acts = st.on_message(t0 + 200 * MS, ip(1), &msgs[0]);
    assert_eq!(
        acts[0],
        SteerAction::Update {
            add: vec![],
            remove: flows([1002]).into_iter().collect()
        }
    );
    let acts = st.on_message(t0 + 300 * MS, ip(1), &dep.done(ip(1), ip(234)));
    assert!(matches!(acts[..], [SteerAction::Remove { .. }]), "{acts:?}");
    assert!(!st.active());
    assert_eq!(st.next_timeout(), None);
}

#[test]
fn a_silent_old_master_loses_its_steering_after_the_liveness_time() {
    let t0 = Instant::now();
    let dep = Departure::new(7, flows([1]));
    let mut st = Steering::new(ip(2), ip(234));
    st.on_message(t0, ip(1), &dep.messages(ip(1), ip(234), OLD_MAC)[0]);
    assert_eq!(st.next_timeout(), Some(t0 + LIVENESS));
    assert!(st.handle_timeout(t0 + LIVENESS - MS).is_empty());
    let acts = st.handle_timeout(t0 + LIVENESS);
    assert!(matches!(acts[..], [SteerAction::Remove { .. }]), "{acts:?}");
    assert!(
        LIVENESS + RESEND < Duration::from_secs(1),
        "removed within a second"
    );
}

#[test]
fn long_lists_come_in_parts_and_are_installed_once_complete() {
    let t0 = Instant::now();
    let dep = Departure::new(9, flows(1..=400));
    let msgs = dep.messages(ip(1), ip(234), OLD_MAC);
    assert_eq!(msgs.len(), 3);
    let mut st = Steering::new(ip(2), ip(234));
    // Parts out of order; nothing happens until the last one.
    assert!(st.on_message(t0, ip(1), &msgs[2]).is_empty());
    assert!(st.on_message(t0, ip(1), &msgs[0]).is_empty());
    let acts = st.on_message(t0, ip(1), &msgs[1]);
    assert!(matches!(&acts[0], SteerAction::Install { flows, .. } if flows.len() == 400));
}

#[test]
fn messages_that_speak_for_another_node_or_group_are_ignored() {
    let t0 = Instant::now();
    let dep = Departure::new(7, flows([1]));
    let mut st = Steering::new(ip(2), ip(234));
    let m = &dep.messages(ip(1), ip(234), OLD_MAC)[0];
    assert!(
        st.on_message(t0, ip(66), m).is_empty(),
        "source is not the node"
    );
    let other = dep.messages(ip(1), ip(235), OLD_MAC);
    assert!(
        st.on_message(t0, ip(1), &other[0]).is_empty(),
        "another VIP"
    );
    assert!(!st.active());
    // An ack reaches the departure only for its own handover.
    let mut dep = dep;
    let mut ack = dep.done(ip(2), ip(234));
    ack.kind = Kind::Ack;
    ack.id = 8;
    dep.on_ack(&ack);
    assert!(!dep.acked());
    ack.id = 7;
    dep.on_ack(&ack);
    assert!(dep.acked());
}
