//! `print!`/`println!` over the architecture's serial port (x86_64 COM1, aarch64 PL011).

use crate::arch;
use crate::sync::IrqSpinLock;
use core::fmt::{self, Write};

/// Serialises whole messages from different CPUs.
static CONSOLE: IrqSpinLock<Serial> = IrqSpinLock::new(Serial);

struct Serial;

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                arch::serial_write_byte(b'\r');
            }
            arch::serial_write_byte(byte);
        }
        Ok(())
    }
}

#[doc(hidden)]
pub fn print(args: fmt::Arguments<'_>) {
    let _ = CONSOLE.lock().write_fmt(args);
}

/// Prints from the panic handler, even if another CPU (or this one) holds the console.
pub fn print_panic(args: fmt::Arguments<'_>) {
    // SAFETY: panicking is the end of the run; interleaving with another CPU's half-written line
    // is acceptable, and the serial port itself has no state that such interleaving breaks.
    let _ = unsafe { CONSOLE.force_lock() }.write_fmt(args);
}

/// Prints to the serial console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => ($crate::console::print(format_args!($($arg)*)));
}

/// Prints a line to the serial console.
#[macro_export]
macro_rules! println {
    () => ($crate::print!("\n"));
    ($($arg:tt)*) => ($crate::console::print(format_args!("{}\n", format_args!($($arg)*))));
}
