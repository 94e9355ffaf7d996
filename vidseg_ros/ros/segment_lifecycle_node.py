"""segment_lifecycle_node: the managed (lifecycle) variant of segment_node.

configure loads the model, activate creates the topics and starts inference, deactivate stops them,
cleanup releases the model and its GPU memory. Same parameters, topics and services as segment_node.
Parameters set while inactive apply on activate; a model that does not load then is reported (ERROR),
its parameters are set back and the node activates with the model it has, as a change while active does.
"""

if __name__ == '__main__':   # python -m: through entry, whose signal handlers cover the imports below
    from vidseg_ros.ros.entry import run_as_main
    run_as_main('vidseg_ros.ros.segment_lifecycle_node')

from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

from vidseg_ros.data.images import clip
from vidseg_ros.ros.core_logging import adopt
from vidseg_ros.ros.segment_node import CoreEnds, SegmentNodeCore
from vidseg_ros.ros.spin import Interrupted, run


class SegmentLifecycleNode(CoreEnds, LifecycleNode):
    """Managed node: the model is loaded on configure and released on cleanup."""

    def __init__(self, node_name: str = 'vidseg_segmenter', **kwargs):
        super().__init__(node_name, **kwargs)
        adopt(self)   # the core's log lines (model load, bag files) come as this node's
        self.core = SegmentNodeCore(self)

    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self.core.load()
        except Interrupted:   # a stop signal: the spin loop ends next, the load is left to its thread
            return TransitionCallbackReturn.FAILURE
        except Exception as e:  # noqa: BLE001 - report the failed transition, stay unconfigured
            self.get_logger().error(f'configure failed: {clip(e)}')
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        # An exception here would send the node to on_error and unconfigured, dropping the loaded model
        # without a word: say why and stay inactive instead.
        try:
            if not self.core.start():   # the last activation's worker is still on a frame (logged)
                return TransitionCallbackReturn.FAILURE
        except Interrupted:   # a stop signal during the load of a model set while inactive: exiting next
            self.core.stop(exiting=True)
            return TransitionCallbackReturn.FAILURE
        except Exception as e:  # noqa: BLE001 - report the failed transition, stay inactive
            self.get_logger().error(f'activate failed: {clip(e)}')
            self.core.stop()
            return TransitionCallbackReturn.FAILURE
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self.core.stop()
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self.core.release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.core.stop(why='shut down')
        self.core.release()
        return TransitionCallbackReturn.SUCCESS


def main(args=None) -> int:
    return run(SegmentLifecycleNode, args, end_process=True)   # no finalization of torch's modules: see spin.end_now

