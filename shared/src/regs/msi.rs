//! Message-signalled interrupts raised by the IOMMU models (fault events, invalidation
//! completion, event-log and PPR interrupts).

use std::sync::{Arc, Mutex, PoisonError};

/// One MSI: a 32-bit write of `data` to `address`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Msi {
    /// Message address.
    pub address: u64,
    /// Message data.
    pub data: u32,
}

/// Where a model delivers its MSIs; the VMM implements it (e.g. with an irqfd or a direct
/// call into its interrupt controller).
pub trait MsiSink: Send + Sync {
    /// Delivers one MSI. Must not call back into the model that sent it.
    fn send(&self, msi: Msi);
}

impl<S: MsiSink + ?Sized> MsiSink for Arc<S> {
    fn send(&self, msi: Msi) {
        (**self).send(msi);
    }
}

impl<S: MsiSink + ?Sized> MsiSink for &S {
    fn send(&self, msi: Msi) {
        (**self).send(msi);
    }
}

/// A sink that drops every MSI.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullMsiSink;

impl MsiSink for NullMsiSink {
    fn send(&self, _msi: Msi) {}
}

/// A sink that records every MSI, for tests.
#[derive(Debug, Default)]
pub struct RecordingMsiSink {
    sent: Mutex<Vec<Msi>>,
}

impl RecordingMsiSink {
    /// An empty recorder.
    pub fn new() -> RecordingMsiSink {
        RecordingMsiSink::default()
    }

    /// Returns the MSIs sent since the last `take`, oldest first, and forgets them.
    pub fn take(&self) -> Vec<Msi> {
        std::mem::take(&mut *self.sent.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Number of MSIs recorded and not yet taken.
    pub fn len(&self) -> usize {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no MSI is waiting to be taken.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl MsiSink for RecordingMsiSink {
    fn send(&self, msi: Msi) {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(msi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_sink_records_in_order_and_take_drains() {
        let sink = Arc::new(RecordingMsiSink::new());
        let dyn_sink: Arc<dyn MsiSink> = sink.clone();
        assert!(sink.is_empty());
        dyn_sink.send(Msi {
            address: 0xfee0_0000,
            data: 0x41,
        });
        fn send_via<S: MsiSink>(sink: S, msi: Msi) {
            sink.send(msi);
        }
        send_via(
            &*sink,
            Msi {
                address: 0xfee0_1000,
                data: 0x42,
            },
        );
        assert_eq!(sink.len(), 2);
        assert_eq!(
            sink.take(),
            vec![
                Msi {
                    address: 0xfee0_0000,
                    data: 0x41
                },
                Msi {
                    address: 0xfee0_1000,
                    data: 0x42
                },
            ]
        );
        assert!(sink.take().is_empty());
        assert!(sink.is_empty());
    }

    #[test]
    fn null_sink_drops() {
        let sink: Box<dyn MsiSink> = Box::new(NullMsiSink);
        sink.send(Msi::default());
    }

    #[test]
    fn recording_sink_survives_poisoning() {
        let sink = Arc::new(RecordingMsiSink::new());
        let s = sink.clone();
        let _ = std::thread::spawn(move || {
            let _guard = s.sent.lock().unwrap();
            panic!("poison");
        })
        .join();
        sink.send(Msi::default());
        assert_eq!(sink.take(), vec![Msi::default()]);
    }
}
