import Combine
import OffstKit

/// Makes a plain OffstKit view model observable by SwiftUI: its `onChange` becomes
/// `objectWillChange` on the main thread.
@MainActor
final class Observed<VM: ViewModel>: ObservableObject {
    let vm: VM
    init(_ vm: VM) {
        self.vm = vm
        vm.onChange = { [weak self] in
            DispatchQueue.main.async { self?.objectWillChange.send() }
        }
    }
}
