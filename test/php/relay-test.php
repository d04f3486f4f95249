<?php
/**
 * @file
 * Runs provision-quick_migrate outside drush: a stand-in of exactly the drush and provision
 * functions the command calls, each recording its call. Driven by test/integration/aegir-provision.test.ts:
 *   php relay-test.php '<json: bin, config, uri, new_uri?, from, to, target>'
 * Prints one JSON object: {"calls": [...in order...], "result": <what the command returned>}.
 */

define('DRUSH_BOOTSTRAP_DRUSH', 1);

$spec = json_decode($argv[1], TRUE);
if (!is_array($spec)) {
  fwrite(STDERR, "usage: php relay-test.php '<json spec>'\n");
  exit(64);
}
$GLOBALS['qm_calls'] = array();
$GLOBALS['qm_options'] = array('quick_migrate_bin' => $spec['bin'], 'quick_migrate_config' => $spec['config']);
if (isset($spec['new_uri'])) {
  $GLOBALS['qm_options']['new_uri'] = $spec['new_uri'];
}

function qm_record(array $call) {
  $GLOBALS['qm_calls'][] = $call;
}

function dt($string, array $args = array()) {
  return strtr($string, $args);
}

function drush_log($message, $type = 'notice') {
  qm_record(array('fn' => 'drush_log', 'type' => $type, 'message' => $message));
}

function drush_set_error($error, $message = NULL) {
  qm_record(array('fn' => 'drush_set_error', 'code' => $error, 'message' => $message));
  return FALSE;
}

function drush_get_option($option, $default = NULL) {
  return array_key_exists($option, $GLOBALS['qm_options']) ? $GLOBALS['qm_options'][$option] : $default;
}

function drush_invoke_process($alias, $command, array $args = array(), array $options = array()) {
  qm_record(array('fn' => 'drush_invoke_process', 'alias' => $alias, 'command' => $command, 'args' => $args, 'options' => $options));
  return array('error_status' => 0);
}

function provision_backend_invoke($alias, $command, array $args = array(), array $options = array()) {
  qm_record(array('fn' => 'provision_backend_invoke', 'alias' => $alias, 'command' => $command, 'args' => $args, 'options' => $options));
  return array('error_status' => 0);
}

/** The contexts provision would load: the site (the command's alias) and the target platform. */
function d($name = NULL) {
  global $spec;
  $from = (object) array('type' => 'platform', 'name' => '@platform_from', 'root' => $spec['from']);
  if ($name === NULL || $name === '@' . $spec['uri']) {
    return (object) array(
      'type' => 'site',
      'name' => '@' . $spec['uri'],
      'uri' => $spec['uri'],
      'platform' => $from,
      'options' => array('context_type' => 'site', 'uri' => $spec['uri'], 'platform' => '@platform_from', 'root' => $spec['from'], 'db_server' => '@server_localhost'),
    );
  }
  if ($name === $spec['target']) {
    return (object) array('type' => 'platform', 'name' => $spec['target'], 'root' => $spec['to']);
  }
  return (object) array('type' => 'none', 'name' => $name, 'root' => NULL);
}

require __DIR__ . '/../../deploy/aegir/provision_quick_migrate/provision_quick_migrate.drush.inc';

$items = provision_quick_migrate_drush_command();
if (!isset($items['provision-quick_migrate'])) {
  fwrite(STDERR, "provision-quick_migrate is not defined\n");
  exit(1);
}
$result = drush_provision_quick_migrate($spec['target']);
echo json_encode(array('calls' => $GLOBALS['qm_calls'], 'result' => $result), JSON_UNESCAPED_SLASHES), "\n";
