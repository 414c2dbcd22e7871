/* A C program that embeds the human3r GStreamer element (docs/gstreamer.md): one line per frame from its
 * `human3r-frame` bus messages. Build: make c-example. Run (after eval "$(human3r-edge gst-env)"):
 *   examples/c/human3r_pipeline VIDEO ENGINES_DIR SMPLX_MODEL ["more human3r properties"]          */
#include <gst/gst.h>
#include <stdio.h>

static void print_frame(const GstStructure *s) {
  gint index = -1, n = 0;
  guint64 pts = GST_CLOCK_TIME_NONE;
  gst_structure_get_int(s, "frame-index", &index);
  gst_structure_get_uint64(s, "pts", &pts);
  const GValue *c2w = gst_structure_get_value(s, "c2w");    /* 16 doubles, row-major 4x4 */
  const GValue *people = gst_structure_get_value(s, "people");
  n = people ? (gint) gst_value_array_get_size(people) : 0;
  g_print("frame %d pts %.6f cam %.4f %.4f %.4f people %d tracks", index, (double) pts / GST_SECOND,
          g_value_get_double(gst_value_array_get_value(c2w, 3)), g_value_get_double(gst_value_array_get_value(c2w, 7)),
          g_value_get_double(gst_value_array_get_value(c2w, 11)), n);
  for (gint i = 0; i < n; i++) {
    const GstStructure *p = gst_value_get_structure(gst_value_array_get_value(people, i));
    gint id = -1;
    gst_structure_get_int(p, "track-id", &id);
    g_print("%s%d", i ? "," : " ", id);
  }
  g_print("\n");
}

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  if (argc < 4) {
    g_printerr("usage: %s VIDEO ENGINES_DIR SMPLX_MODEL [\"extra human3r properties\"]\n", argv[0]);
    return 2;
  }
  gchar *desc = g_strdup_printf("filesrc location=\"%s\" ! decodebin ! videoconvert ! video/x-raw,format=RGB ! "
                                "human3r engines=\"%s\" smplx-model=\"%s\" %s ! fakesink",
                                argv[1], argv[2], argv[3], argc > 4 ? argv[4] : "");
  GError *err = NULL;
  GstElement *pipeline = gst_parse_launch(desc, &err);
  g_free(desc);
  if (!pipeline) {
    g_printerr("human3r_pipeline | cannot build the pipeline: %s. Hint: eval \"$(human3r-edge gst-env)\"\n",
               err ? err->message : "?");
    return 1;
  }
  GstBus *bus = gst_element_get_bus(pipeline);
  int code = 0, done = 0;
  if (gst_element_set_state(pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) code = 1;
  while (!done) {
    GstMessage *msg = gst_bus_timed_pop_filtered(bus, GST_CLOCK_TIME_NONE,
                                                 GST_MESSAGE_ELEMENT | GST_MESSAGE_ERROR | GST_MESSAGE_EOS);
    const GstStructure *s = gst_message_get_structure(msg);
    if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ELEMENT && gst_structure_has_name(s, "human3r-frame")) {
      print_frame(s);
    } else if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) {
      GError *e = NULL;
      gst_message_parse_error(msg, &e, NULL);
      g_printerr("human3r_pipeline | error from %s: %s\n", GST_OBJECT_NAME(msg->src), e->message);
      g_clear_error(&e);
      code = 1, done = 1;
    } else if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_EOS) {
      done = 1;
    }
    gst_message_unref(msg);
  }
  gst_element_set_state(pipeline, GST_STATE_NULL);  /* READY->NULL closes the session */
  gst_object_unref(bus);
  gst_object_unref(pipeline);
  return code;
}
