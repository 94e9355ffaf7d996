"""ros.startup.fd_limit_advice: a start-up out of file descriptors said in one line naming the limit (rcl's own text
buries 'Too many open files' 400 characters in, after 'Type support not from this implementation')."""
import errno
import resource

from vidseg_ros.ros.startup import fd_limit_advice

# rclpy's RCLError text as rcl gave it under `ulimit -n 22` (segment_node, rclpy from the wheels)
RCL_EMFILE = ("error creating node: Type support not from this implementation. Got:\n    Handle's typesupport identifier "
              "(rosidl_typesupport_cpp) is not supported by this library, at /project/src/type_support_dispatch.hpp:114"
              "\n    Could not load library librmw_dds_common__rosidl_typesupport_fastrtps_cpp.so: dlopen error: "
              "librmw_dds_common__rosidl_typesupport_fastrtps_cpp.so: cannot open shared object file: Too many open "
              "files, at /project/src/shared_library.c:96, at /project/src/type_support_dispatch.hpp:79\nwhile "
              "fetching it, at /project/src/publisher.cpp:115, at /project/src/rcl/node.c:249")


def test_running_out_of_descriptors_is_said_with_the_limit_and_the_fix():
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    for error in (RuntimeError(RCL_EMFILE), OSError(errno.EMFILE, 'Too many open files', 'model.pt')):
        line = fd_limit_advice(error)
        assert line.startswith(f'too many open files: the open-file limit (RLIMIT_NOFILE, ulimit -n) is {soft},'), line
        assert 'ulimit -n' in line and 'LimitNOFILE=' in line and '\n' not in line


def test_other_start_up_failures_keep_their_own_words():
    for error in (RuntimeError('error creating node: something else'), OSError(errno.ENOENT, 'No such file'),
                  ValueError('model nope.pt does not exist')):
        assert fd_limit_advice(error) is None
