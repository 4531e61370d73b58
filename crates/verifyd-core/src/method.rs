//! The vocabulary of the Sinch Verification API, as domain enums with their exact wire
//! strings. Parsing is tolerant where SDKs differ (`flashCall` vs `flashcall`); output is
//! always the canonical form.

use std::fmt;

/// A verification method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// An OTP sent by SMS.
    Sms,
    /// A missed call whose caller id (CLI) is the code.
    Flashcall,
    /// A phone call that speaks the code.
    Callout,
    /// Carrier data verification: the device opens `targetUri` over mobile data.
    Seamless,
    /// An OTP sent by WhatsApp.
    Whatsapp,
}

impl Method {
    /// Every method, in wire order.
    pub const ALL: [Method; 5] = [
        Method::Sms,
        Method::Flashcall,
        Method::Callout,
        Method::Seamless,
        Method::Whatsapp,
    ];

    /// The canonical lower-case wire value (`flashcall`, never `flashCall`).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Sms => "sms",
            Method::Flashcall => "flashcall",
            Method::Callout => "callout",
            Method::Seamless => "seamless",
            Method::Whatsapp => "whatsapp",
        }
    }

    /// Parses a method case-insensitively. Accepts the SDK aliases `phonecall` (callout) and
    /// `data` (seamless) as well as the canonical names.
    pub fn parse(value: &str) -> Option<Method> {
        let lower = value.trim().to_ascii_lowercase();
        Some(match lower.as_str() {
            "sms" => Method::Sms,
            "flashcall" => Method::Flashcall,
            "callout" | "phonecall" => Method::Callout,
            "seamless" | "data" => Method::Seamless,
            "whatsapp" => Method::Whatsapp,
            _ => return None,
        })
    }

    /// Whether the method places a phone call (has `callComplete`/`callResult`).
    pub fn is_call(self) -> bool {
        matches!(self, Method::Flashcall | Method::Callout)
    }

    /// Whether the method delivers a typed code (SMS, WhatsApp, callout).
    pub fn has_code(self) -> bool {
        matches!(self, Method::Sms | Method::Whatsapp | Method::Callout)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The exact wire string.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }

            /// Parses the exact wire string.
            pub fn parse(value: &str) -> Option<Self> {
                match value { $($wire => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum! {
    /// The status of a verification. Everything but `Pending` is final.
    Status {
        /// Waiting for the code (or call, or data session).
        Pending => "PENDING",
        /// The number was verified.
        Successful => "SUCCESSFUL",
        /// Wrong code too often, or expired.
        Fail => "FAIL",
        /// Refused before anything was sent (callback, fraud rules, credit).
        Denied => "DENIED",
        /// Superseded by a newer verification for the same number and method.
        Aborted => "ABORTED",
        /// The channel failed (unreachable number, delivery failure).
        Error => "ERROR",
    }
}

impl Status {
    /// Whether the status can never change again.
    pub fn is_final(self) -> bool {
        self != Status::Pending
    }
}

wire_enum! {
    /// Why a verification is in its state.
    Reason {
        /// Blocked by fraud rules.
        Fraud => "Fraud",
        /// The spend cap was reached.
        NotEnoughCredit => "Not enough credit",
        /// The number is on a block list.
        Blocked => "Blocked",
        /// The customer backend answered `deny`.
        DeniedByCallback => "Denied by callback",
        /// The customer backend answered with something unusable.
        InvalidCallback => "Invalid callback",
        /// A server-side failure.
        InternalError => "Internal error",
        /// The destination country or number type is not allowed.
        DestinationDenied => "Destination denied",
        /// The call or message could not reach the number.
        NetworkErrorOrNumberUnreachable => "Network error or number unreachable",
        /// Sinch legacy value.
        FailedPending => "Failed pending",
        /// The SMS delivery receipt reported a failure.
        SmsDeliveryFailure => "SMS delivery failure",
        /// The reported flash-call CLI did not match.
        InvalidCli => "Invalid CLI",
        /// The reported code did not match.
        InvalidCode => "Invalid code",
        /// The verification expired before a correct report.
        Expired => "Expired",
        /// A callout ended without a valid code.
        HungUpWithoutEnteringValidCode => "Hung up without entering valid code",
    }
}

wire_enum! {
    /// How the code reached the report: read automatically by a mobile SDK, or typed.
    Source {
        /// Intercepted automatically on the device.
        Intercepted => "intercepted",
        /// Entered by the user or the backend.
        Manual => "manual",
    }
}

wire_enum! {
    /// The outcome of the phone call behind a flashcall or callout.
    CallResult {
        /// The call was answered.
        Answered => "ANSWERED",
        /// The call was cancelled by us (the normal end of a flash call).
        Cancel => "CANCEL",
        /// The call completed.
        Completed => "COMPLETED",
        /// Nobody answered.
        NoAnswer => "NO_ANSWER",
        /// The line was busy.
        Busy => "BUSY",
        /// The call failed.
        Failed => "FAILED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_parse_accepts_every_sdk_spelling() {
        assert_eq!(Method::parse("flashCall"), Some(Method::Flashcall));
        assert_eq!(Method::parse("FLASHCALL"), Some(Method::Flashcall));
        assert_eq!(Method::parse("flashcall"), Some(Method::Flashcall));
        assert_eq!(Method::parse("SMS"), Some(Method::Sms));
        assert_eq!(Method::parse("phonecall"), Some(Method::Callout));
        assert_eq!(Method::parse("WhatsApp"), Some(Method::Whatsapp));
        assert_eq!(Method::parse("fax"), None);
    }

    #[test]
    fn method_output_is_lower_case() {
        for m in Method::ALL {
            assert_eq!(m.as_str(), m.as_str().to_ascii_lowercase());
            assert_eq!(Method::parse(m.as_str()), Some(m));
        }
    }

    #[test]
    fn wire_enums_round_trip() {
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(*r));
        }
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(*s));
        }
        assert!(!Status::Pending.is_final());
        assert!(Status::Aborted.is_final());
    }
}
