// Access to a class's private member through explicit instantiation, where access checking does
// not apply ([temp.spec.general]). Used only to reach into Asio's internals where it keeps state
// we must manage (reactor_pool.cpp, transport/drained_reads.cpp): each Tag's get() returns the
// member pointer. A member renamed by a later Boost is a compile error, never a silent misuse.
// The tags must be declared in this namespace too: a friend declared in a class belongs to
// the class's innermost namespace, and the tag's and Expose's get() must be the same function.
//
//   struct FdOf { using type = int State::*; friend type get(FdOf); };
//   template struct modelux::asio_access::Expose<FdOf, &State::descriptor_>;  // FdOf in that namespace too
//   int& fd = state->*get(FdOf{});
#pragma once

namespace modelux::asio_access {

template <typename Tag, typename Tag::type M>
struct Expose {
  friend typename Tag::type get(Tag) { return M; }
};

/// The same for a member whose type is private too (it cannot be named in Tag::type): the tag
/// declares `friend auto get(Tag);` and the member pointer's type is deduced.
template <typename Tag, auto M>
struct ExposeDeduced {
  friend auto get(Tag) { return M; }
};

}  // namespace modelux::asio_access
